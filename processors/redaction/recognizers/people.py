"""Person names in free text beyond what the small NER model finds: a capitalised run after a
role or title word ("recipient Favian", "doctor Satou"), and full names whose given name is
known in some language ("Päivä T Suomalainen"). Free text only, like NER."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar

import regex
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from errorgate.processors.redaction.recognizers.base import FreeTextRecognizer, Gate, opens_sentence, result
from errorgate.processors.redaction.recognizers.dictionary import english_words
from errorgate.processors.redaction.recognizers.names import COMMON_WORDS, given_names, surnames

# A name word: capitalised, letters of any script with apostrophes and inner hyphens; or an initial.
# Lower-case particles of surnames ("da Rocha", "van der Klijn", "le Guellec") belong to the word after them.
_PARTICLES = r"(?:(?:van|von|der|den|de|da|das|dos|do|del|della|di|du|le|la|ten|ter|zu|bin|al)[ \t]+){0,2}"
# Gaelic and Scottish prefixes carry a second capital ("O'Goldrick", "McLeod", "MacNeil").
_WORD = (
    rf"{_PARTICLES}(?:O['’]|D['’]|Mc|Mac(?=\p{{Lu}})|Fitz(?=\p{{Lu}}))?\p{{Lu}}[\p{{Ll}}\p{{Lo}}'’]+"
    r"(?:-\p{Lu}[\p{Ll}'’]+)*"
)
_INITIAL = r"\p{Lu}\.?"
_PART = regex.compile(rf"{_WORD}|{_INITIAL}")

# Words that put a person's name right after them: roles in support and telemetry text,
# courtesy titles in the languages of the corpus, verbs of contact.
ROLE_WORDS = (
    "recipient", "caller", "customer", "client", "user", "patient", "requester", "sender",
    "addressee", "holder", "cardholder", "guest", "member", "subscriber", "agent", "driver",
    "courier", "employee", "applicant", "tenant", "buyer", "seller", "passenger", "consignee",
    "beneficiary", "payee", "payer", "assignee", "reporter", "contact", "nurse", "doctor", "dr",
    "prof", "professor", "mr", "mrs", "ms", "miss", "mx", "sir", "madam", "herr", "frau", "sr",
    "sra", "srta", "mme", "mlle", "monsieur", "madame", "signor", "signora", "dhr", "mevr",
    "pan", "pani", "contacted", "spoke with", "called", "emailed", "regards", "thanks",
    "cheers", "attn", "cc", "assigned to", "name", "named",
)  # fmt: skip
# Courtesy and academic titles: the word after one is a name even when it is also an English
# word ("dr Little", "mrs Wood").
TITLE_WORDS = frozenset(
    {"doctor", "dr", "prof", "professor", "mr", "mrs", "ms", "miss", "mx", "sir", "madam", "herr",
     "frau", "sr", "sra", "srta", "mme", "mlle", "monsieur", "madame", "signor", "signora", "dhr",
     "mevr", "pan", "pani"}
)  # fmt: skip
_ROLE_NAME = regex.compile(
    rf"(?i:(?<![\w.-])(?P<role>{'|'.join(ROLE_WORDS)}))\.?[:=,]?[ \t]+(?P<v>(?:{_WORD}|{_INITIAL})(?:[ \t]+(?:{_WORD}|{_INITIAL})){{0,3}})"
)
_ROLE_GATE = re.compile(rf"(?<![\w.-])(?:{'|'.join(ROLE_WORDS)})\b")  # on the lower-cased value
_FULL_NAME = regex.compile(rf"(?<![\w.-]){_WORD}(?:[ \t]+(?:{_WORD}|{_INITIAL})){{1,3}}")
_FULL_GATE = regex.compile(r"\p{Lu}\p{Ll}+[ \t]+(?:\p{Ll}{1,4}[ \t]+){0,2}\p{Lu}")


def _is_name_word(word: str) -> bool:
    """Not a plain word, an all-caps code or an identifier."""
    bare = word.rstrip(".")
    return bool(bare) and bare.lower() not in COMMON_WORDS and not (len(bare) > 1 and bare.isupper())


def _is_initial(word: str) -> bool:
    return len(word.rstrip(".")) == 1


def _name_parts(text: str, start: int, end: int, first_any: bool = False) -> tuple[int, int] | None:
    """The span of the leading run of name words in ``text[start:end]`` (a trailing full stop
    ends a sentence unless it follows an initial). An initial counts only between name words
    ("Maria A Druart"; "A" alone is the article). ``first_any``: the first word is a name even
    when it is an English word (after a title: "dr Little")."""
    parts = list(_PART.finditer(text, start, end))
    last = None
    for i, m in enumerate(parts):
        word = m.group()
        if _is_initial(word):
            if i + 1 >= len(parts) or not _is_name_word(parts[i + 1].group()):
                break
            continue
        title_named = i == 0 and first_any and not word.isupper()
        if not (_is_name_word(word) or title_named):
            break
        last = m.end() - (1 if word.endswith(".") and len(word) > 2 else 0)
    return (start, last) if last is not None else None


def _initial_or_surname(words: list[regex.Match[str]], family: frozenset[str]) -> int | None:
    parts = [w.group() for w in words]
    for i in range(len(parts) - 2):
        if len(parts[i]) > 2 and len(parts[i + 1].rstrip(".")) == 1 and len(parts[i + 2]) > 2:
            return i
    if len(parts) >= 2 and parts[-1] in family and len(parts[-2]) > 2:
        return len(parts) - 2
    return None


class RoleNameRecognizer(FreeTextRecognizer):
    """One to four name words after a role, title or contact word. Scored above NER, which
    reads a lone surname ("doctor Satou") as a place."""

    ENTITY = "PERSON"
    SCORE: ClassVar[float] = 0.9

    def gate(self) -> Gate:
        search = _ROLE_GATE.search
        return lambda text, lower, digits: search(lower) is not None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out = []
        for m in _ROLE_NAME.finditer(text):
            start, end = m.span("v")
            span = _name_parts(text, start, end, first_any=m.group("role").lower() in TITLE_WORDS)
            if span is not None:
                out.append(result(self, self.ENTITY, *span, self.SCORE, "role_word"))
        return out


# The recognizers that read runs of capitalised words (Listed, Proper) share the gate and the
# runs; each decides which run is a name. Functions, not a shared base class: every recognizer
# class in this package is a registered built-in.
def _capitalised_run_gate() -> Gate:
    search = _FULL_GATE.search
    return lambda text, lower, digits: search(text) is not None


def _capitalised_runs(text: str) -> Iterator[tuple[regex.Match[str], list[regex.Match[str]]]]:
    """Each run of two to four capitalised words with its words (initials included)."""
    for m in _FULL_NAME.finditer(text):
        yield m, list(_PART.finditer(text, *m.span()))


class ListedNameRecognizer(FreeTextRecognizer):
    """Two to four capitalised words (initials allowed) starting with a given name known in
    some locale, ending in a known surname or another name word."""

    ENTITY = "PERSON"
    # Above NER's 0.85: NER often stops at the given name or calls the surname a place.
    SCORE: ClassVar[float] = 0.86

    def gate(self) -> Gate:
        return _capitalised_run_gate()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        given, family = given_names(), surnames()
        out = []
        for m, words in _capitalised_runs(text):
            first = next((i for i, w in enumerate(words[:-1]) if w.group() in given), None)
            if first is None:
                # Unknown given name: still a name when a middle initial sits between two name
                # words ("Päivä T Suomalainen"), or the last word is a known surname.
                first = _initial_or_surname(words, family)
                if first is None:
                    continue
            span = _name_parts(text, words[first].start(), m.end())
            if span is None:
                continue
            tail = text[span[0] : span[1]].split()
            if len(tail) < 2 or not (tail[-1] in family or tail[-1] in given or _is_name_word(tail[-1])):
                continue
            out.append(result(self, self.ENTITY, *span, self.SCORE, "listed_given_name"))
        return out


def _is_english(word: str, english: frozenset[str]) -> bool:
    bare = word.rstrip(".").lower()
    return bare in english or bare in COMMON_WORDS


def _glued(text: str, end: int) -> bool:
    return end < len(text) and text[end].isalnum()


def _first_name_part(
    text: str, parts: list[regex.Match[str]], english: frozenset[str], given: frozenset[str]
) -> int:
    """Index of the first word of the name in a capitalised run. At the start of a sentence a
    capitalised English word is just capitalised ("Webhook Amra Grob", "Payment Declined"), so
    such words are skipped unless they are a known given name or an initial and a name follow
    ("Peace O Ibrahim"); inside a sentence the capital marks a name ("for Joy McLeod")."""
    first = 0
    while first < len(parts):
        word = parts[first].group()
        if _is_initial(word):
            first += 1
            continue
        if not _is_english(word, english) or word in given:
            break
        at_start = opens_sentence(text, parts[first].start())
        middle_initial = first + 2 < len(parts) and _is_initial(parts[first + 1].group())
        if not at_start or middle_initial:
            break
        first += 1
    return first


class ProperNameRecognizer(FreeTextRecognizer):
    """Two to four capitalised words in running text (initials between them allowed), at least
    one of which is no English word: names the lists do not know ("Amra Grob", "Leszek
    Ditschlerin", "Nikki de Leeuw"). A capitalised run of English words ("Payment Declined",
    "Spring Boot") is not one, nor is a word in capitals (codes, constants). Leading English
    words are left out of the span ("Webhook Amra Grob"), unless they are a known given name
    ("Hope Ibrahim"). Below the other name recognizers and NER: it knows the least."""

    ENTITY = "PERSON"
    SCORE: ClassVar[float] = 0.7

    def gate(self) -> Gate:
        return _capitalised_run_gate()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        english, given = english_words(), given_names()
        out = []
        for _, parts in _capitalised_runs(text):
            first = _first_name_part(text, parts, english, given)
            words = [p for p in parts[first:] if not _is_initial(p.group())]
            if len(words) < 2 or any(w.group().isupper() or _glued(text, w.end()) for w in words):
                continue  # codes in capitals; a word running on into letters or digits is a token
            if all(_is_english(w.group(), english) for w in words):
                continue
            end = words[-1].end() - (1 if words[-1].group().endswith(".") else 0)
            out.append(result(self, self.ENTITY, parts[first].start(), end, self.SCORE, "proper_name"))
        return out
