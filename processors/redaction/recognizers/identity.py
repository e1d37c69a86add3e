"""Dates of birth (a HIPAA Safe Harbor identifier and GDPR personal data): a date right after
a birth word in one of the corpus' languages ("born 1984-03-02", "DOB: 02/03/1984",
"geboren am 02.03.1984", "date of birth March 2, 1984")."""

from __future__ import annotations

import re

from errorgate.processors.redaction.recognizers.base import RegexRecognizer

BIRTH_WORDS = (
    r"born|dob|d\.o\.b\.?|date[ _-]?of[ _-]?birth|birth[ _-]?date|birthdate|birthday|geboren"
    r"|geburtsdatum|né|née|date de naissance|nacid[oa]|fecha de nacimiento|nat[oa]|data di nascita"
    r"|nascid[oa]|data de nascimento|født|fødselsdato|född|födelsedatum|syntynyt|syntymäaika"
    r"|geboortedatum|urodzon[ya]|data urodzenia|narozen[aá]?|datum narození|doğum tarihi"
    r"|születési dátum|született|data nașterii|născut[ăa]?"
)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATE = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})"
    rf"|{_MONTH}[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+\d{{4}}|\d{{1,2}}(?:st|nd|rd|th)?\.?[ \t]+{_MONTH}[ \t]+\d{{4}})"
)


class DateOfBirthRecognizer(RegexRecognizer):
    ENTITY = "DATE_OF_BIRTH"
    FLAGS = re.IGNORECASE
    GATE = r"born|dob|d\.o\.b|birth|geb|n[ée]|nac|nat|nasc|f[øö]d|synt|urodz|naroz|doğum|szület|naște|născ"
    GATE_LOWER = True
    MIN_DIGITS = 4
    # Up to a few filler words between the birth word and the date: "on", "am", "le", ":", "is".
    PATTERNS = [
        (
            "birth_word_date",
            rf"(?<!\w)(?:{BIRTH_WORDS})(?!\w)\W{{0,3}}(?:(?:on|am|le|el|em|il|the|is|was|to|as|of|at|den|d\.|dne|:)\W{{1,3}}){{0,2}}(?P<v>{_DATE})(?!\d)",
            0.85,
        )
    ]
