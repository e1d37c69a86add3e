"""National identification numbers of EU/EEA countries and the UK (GDPR art. 87), reported as
``NATIONAL_ID`` with the country in the rule ("NationalIdRecognizer:de_steuer_id").

Every format with a check digit is validated with it. Presidio ships country recognizers for
several of them; their patterns are written for documents (bare 11-digit runs at score 0.5 for
the German tax id, unbounded 11-digit runs for PESEL, Luhn-valid 10-digit runs for Swedish
numbers) and, in telemetry full of numeric ids and epoch timestamps, would redact a tenth of
them. So their *validators* are reused (``DeTaxIdRecognizer``, ``PlPeselRecognizer``,
``FiPersonalIdentityCodeRecognizer``, ``SePersonnummerRecognizer``, ``EsNifRecognizer``,
``EsNieRecognizer``, ``ItFiscalCodeRecognizer`` and its pattern, ``TrNationalIdRecognizer``;
``UkNinoRecognizer``'s prefix rules) and the patterns are ours:

- formats distinctive on their own (Finnish HETU ``131052-308T``, Spanish DNI ``12345678Z`` and
  NIE ``X1234567L``, Italian codice fiscale, UK NINO ``QQ 12 34 56 C``, French NIR written in its
  groups ``1 84 12 76 451 089 46``) are found anywhere, checksum-valid;
- all-digit formats (German Steuer-ID, Dutch BSN, Polish PESEL, Swedish personnummer, Danish
  CPR, Turkish TCKN, a French NIR without spaces) only right after their label ("Steuer-ID:",
  "BSN", "PESEL", "personnummer", "CPR-nr.", "TC kimlik no", "n° de sécurité sociale").

Danish CPR numbers issued since 2007 have no check digit; they are matched by label and a valid
date. UK NINOs have none either: the prefix rules are the check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from functools import cache
from typing import Any, ClassVar

from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from errorgate.processors.redaction.recognizers.base import Gate, RegexRecognizer, result

Validator = Callable[[str], bool]


@cache
def _presidio(name: str) -> Any:
    """One instance of a Presidio country recognizer, for its ``validate_result``."""
    from presidio_analyzer import predefined_recognizers

    return getattr(predefined_recognizers, name)()


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _presidio_check(name: str, normalise: Callable[[str], str] = _digits) -> Validator:
    return lambda value: bool(_presidio(name).validate_result(normalise(value)))


def _bsn(value: str) -> bool:
    """Dutch BSN: the "elfproef", 9*d1 + 8*d2 + ... + 2*d8 - 1*d9 divisible by 11."""
    d = [int(c) for c in _digits(value)]
    if len(d) != 9 or (d[0] == 0 and d[1] == 0):
        return False
    total = sum(w * x for w, x in zip(range(9, 1, -1), d[:8], strict=True)) - d[8]
    return total % 11 == 0 and total != 0


def _nir(value: str) -> bool:
    """French NIR: 13 characters (sex, year, month, département, commune, order) and a key of
    97 - (number mod 97); Corsica's 2A/2B count as 19/18."""
    compact = re.sub(r"[ .-]", "", value).upper()
    if len(compact) != 15 or compact[0] not in "1278":
        return False
    body, key = compact[:13], compact[13:]
    if not key.isdigit():
        return False
    month = int(body[3:5]) if body[3:5].isdigit() else 0
    if not (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99):
        return False
    body = body.replace("2A", "19", 1) if body[5:7] == "2A" else body.replace("2B", "18", 1)
    if not body.isdigit():
        return False
    return 97 - int(body) % 97 == int(key)


def _cpr(value: str) -> bool:
    """Danish CPR: DDMMYY-SSSS with a real date (the 7th digit and the year give the century)."""
    d = _digits(value)
    if len(d) != 10:
        return False
    day, month, yy, seventh = int(d[:2]), int(d[2:4]), int(d[4:6]), int(d[6])
    if seventh <= 3 or (seventh in (4, 9) and yy <= 36):
        century = 2000 if seventh in (4, 9) else 1900
    elif seventh in (5, 6, 7, 8):
        century = 2000 if yy <= 57 else 1800
    else:
        century = 1900
    try:
        date(century + yy, month, day)
    except ValueError:
        return False
    return True


def _nino(value: str) -> bool:
    compact = value.replace(" ", "").upper()
    prefix = compact[:2]
    return (
        len(compact) == 9
        and prefix not in ("BG", "GB", "NK", "KN", "NT", "TN", "ZZ")
        and prefix[0] not in "DFIQUV"
        and prefix[1] not in "DFIOQUV"
        and compact[-1] in "ABCD"
    )


def _label(words: str) -> str:
    """A label, then up to three separators and an optional "number" word before the value."""
    return (
        rf"(?i:(?<![\w-])(?:{words}))\.?[ \t]*(?i:(?:no|nr|num|number|nummer|numer|numero|número|n°|n[ºo])\.?[ \t]*)?"
        r"[:=#]?[ \t]*[\"']?"
    )


# All-digit values are bounded so they are not part of a longer number or id.
_B = r"(?<![\w.-])"
_E = r"(?![\w-]|\.\d)"
_CODICE = _presidio("ItFiscalCodeRecognizer").patterns[0].regex.removeprefix("(?i)")

# (rule, regex with group v, score, validator)
RULES: tuple[tuple[str, str, float, Validator], ...] = (
    # anywhere: the format is distinctive and checksummed
    ("fi_hetu", rf"{_B}(?P<v>\d{{6}}[-+A-FU-Y]\d{{3}}[0-9A-FHJ-NPR-Y]){_E}", 0.85,
     _presidio_check("FiPersonalIdentityCodeRecognizer", str.upper)),
    ("es_dni", rf"{_B}(?P<v>\d{{8}}-?[A-HJ-NP-TV-Z]){_E}", 0.8,
     _presidio_check("EsNifRecognizer", str.upper)),
    ("es_nie", rf"{_B}(?P<v>[XYZ]-?\d{{7}}-?[A-HJ-NP-TV-Z]){_E}", 0.85,
     _presidio_check("EsNieRecognizer", lambda v: v.replace("-", "").upper())),
    ("it_codice_fiscale", rf"(?<![\w-])(?P<v>{_CODICE})(?![\w-])", 0.85,
     _presidio_check("ItFiscalCodeRecognizer", str.upper)),
    ("uk_nino", rf"{_B}(?P<v>[A-Z]{{2}}(?: ?\d{{2}}){{3}} ?[A-D]){_E}", 0.8, _nino),
    ("fr_nir", rf"{_B}(?P<v>[1278] \d{{2}} \d{{2}} (?:\d{{2}}|2[AB]) \d{{3}} \d{{3}} \d{{2}}){_E}", 0.85, _nir),
    # after a label: all-digit formats
    ("de_steuer_id",
     _label(r"steuer[ -]?id(?:entifikationsnummer)?|steuer[ -]?idnr|idnr|steuerliche identifikationsnummer"
            r"|identifikationsnummer|tax[ _-]?id|tin")
     + rf"(?P<v>[1-9]\d(?: ?\d{{3}}){{3}}){_E}", 0.85, _presidio_check("DeTaxIdRecognizer")),
    ("nl_bsn", _label(r"bsn|burgerservicenummer|sofi[ -]?nummer|sofinummer")
     + rf"(?P<v>\d{{4}}\.?\d{{2}}\.?\d{{3}}|\d{{3}}[ .]?\d{{3}}[ .]?\d{{3}}){_E}", 0.85, _bsn),
    ("pl_pesel", _label(r"pesel") + rf"(?P<v>\d{{11}}){_E}", 0.85, _presidio_check("PlPeselRecognizer")),
    ("se_personnummer",
     _label(r"personnummer|personnr|pers\.?nr|samordningsnummer|person(?:al)? (?:identity )?number")
     + rf"(?P<v>(?:19|20)?\d{{6}}[-+ ]?\d{{4}}){_E}", 0.85,
     _presidio_check("SePersonnummerRecognizer")),
    ("dk_cpr", _label(r"cpr(?:[ -]?(?:nr|nummer))?|personnummer") + rf"(?P<v>\d{{6}}-?\d{{4}}){_E}", 0.85, _cpr),
    ("tr_tckn", _label(r"t\.?c\.?(?: kimlik)?|tckn|kimlik") + rf"(?P<v>[1-9]\d{{10}}){_E}", 0.85,
     _presidio_check("TrNationalIdRecognizer")),
    ("fr_nir_labelled",
     _label(r"nir|insee|s[ée]curit[ée] sociale|s[ée]cu|num[ée]ro de s[ée]curit[ée] sociale|n° ss")
     + rf"(?P<v>[1278][ ]?\d{{2}}[ ]?\d{{2}}[ ]?(?:\d{{2}}|2[AB])[ ]?\d{{3}}[ ]?\d{{3}}[ ]?\d{{2}}){_E}", 0.85, _nir),
)  # fmt: skip


class NationalIdRecognizer(RegexRecognizer):
    """The national ids of ``RULES``, each checked by its checksum (or date and prefix rules)."""

    ENTITY = "NATIONAL_ID"
    PATTERNS: ClassVar[list[tuple[str, str, float]]] = [(r, rx, s) for r, rx, s, _ in RULES]
    MIN_DIGITS = 0  # an "omocodic" codice fiscale may write its digits as letters
    GATE = r"\d\d|[A-Z]{6}[\dLMNP-V]{2}[A-EHLMPR-T]"

    def __init__(self) -> None:
        super().__init__()
        self._validators = {rule: check for rule, _, _, check in RULES}

    def gate(self) -> Gate | None:
        search = re.compile(self.GATE or "").search
        return lambda text, lower, digits: len(text) >= 9 and search(text) is not None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        for rule, rx, score in self._compiled:
            check = self._validators[rule]
            for m in rx.finditer(text):
                start, end = m.span("v")
                try:
                    ok = check(m.group("v"))
                except (ValueError, IndexError, KeyError):
                    ok = False
                if ok:
                    out.append(result(self, self.ENTITY, start, end, score, rule))
        return out
