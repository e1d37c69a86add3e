"""Person and location names from spaCy NER, applied only to free-text fields.

The small spaCy model misses names in telemetry phrasing ("declined for Margaret Thornbury card
..."), so a second, deterministic check runs beside it: a capitalised pair whose first word is
a listed given name (``governance/redaction/first_names.txt``) is a PERSON.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

# Telemetry words NER mislabels: code identifiers, paths, error codes, numbers.
_NOT_A_NAME = re.compile(r"[\d/_=@:\\<>{}\[\]#$%]|[a-z][A-Z]|^[A-Z0-9_ -]+$")


_FULL_NAME = re.compile(r"\b([A-Z][a-z]+)\s+((?:Mc|Mac|O')?[A-Z][a-z]+(?:-[A-Z][a-z]+)?)\b")
LISTED_NAME_SCORE = 0.7


@cache
def given_names() -> frozenset[str]:
    text = resources.files("errorgate.governance").joinpath("redaction/first_names.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def listed_names(text: str) -> list[RecognizerResult]:
    names = given_names()
    return [
        RecognizerResult("PERSON", m.start(), m.end(), LISTED_NAME_SCORE)
        for m in _FULL_NAME.finditer(text)
        if m.group(1) in names
    ]


class NameRecognizer(SpacyRecognizer):
    ENTITIES = ["PERSON", "LOCATION"]

    def __init__(self) -> None:
        super().__init__(supported_entities=list(self.ENTITIES), name=type(self).__name__)

    def analyze(  # type: ignore[override]
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        if nlp_artifacts is not None and nlp_artifacts.entities:
            results = [  # names are capitalised; "kyc check" is not a person
                r
                for r in super().analyze(text, entities, nlp_artifacts)
                if len(text[r.start : r.end].strip()) > 2
                and text[r.start].isupper()
                and not _NOT_A_NAME.search(text[r.start : r.end])
            ]
        if "PERSON" in entities:
            results.extend(listed_names(text))  # overlaps are resolved by the engine
        return results
