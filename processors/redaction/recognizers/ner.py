"""Person and location names from spaCy NER, applied only to free-text fields.

The small spaCy model misses names in telemetry phrasing ("declined for Margaret Thornbury card
..."); ``people`` has the deterministic checks that run beside it (role words, known given names).
"""

from __future__ import annotations

import re

from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from errorgate.processors.redaction.recognizers.dictionary import TECH_WORDS, english_words

# Telemetry words NER mislabels: code identifiers, paths, error codes, numbers.
_NOT_A_NAME = re.compile(r"[\d/_=@:\\<>{}\[\]#$%]|[a-z][A-Z]|^[A-Z0-9_ -]+$")
_WORDS = re.compile(r"[^\W\d_]+")


def _product_name(span: str) -> bool:
    """A software or vendor name with English words ("Kafka Connect", "Grafana Loki"): NER's
    small model calls these people."""
    words = [w.lower() for w in _WORDS.findall(span)]
    english = english_words()
    return any(w in TECH_WORDS for w in words) and all(w in english for w in words)


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
                and not _product_name(text[r.start : r.end])
            ]
        return results
