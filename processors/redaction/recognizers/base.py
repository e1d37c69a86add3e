"""Shared base: regex patterns with a cheap pre-check, an optional value group, validation."""

from __future__ import annotations

import re
from typing import ClassVar

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts


def digit_count(text: str) -> int:
    return sum(map(text.count, "0123456789"))


def result(
    recognizer: EntityRecognizer, entity: str, start: int, end: int, score: float, rule: str
) -> RecognizerResult:
    return RecognizerResult(
        entity_type=entity,
        start=start,
        end=end,
        score=score,
        recognition_metadata={
            RecognizerResult.RECOGNIZER_NAME_KEY: recognizer.name,  # type: ignore[has-type]
            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: recognizer.id,
            "rule": rule,
        },
    )


class RegexRecognizer(EntityRecognizer):
    """Patterns ``(rule, regex, score)``; a named group ``v`` marks the part to redact
    (so ``password=`` stays readable and only the value goes)."""

    ENTITY: ClassVar[str]
    PATTERNS: ClassVar[list[tuple[str, str, float]]]
    FLAGS: ClassVar[int] = 0
    # Substrings of which at least one must occur for any pattern to match: a C-speed skip.
    HINTS: ClassVar[tuple[str, ...]] = ()
    HINTS_LOWER: ClassVar[bool] = False

    def __init__(self) -> None:
        self._compiled = [(rule, re.compile(rx, self.FLAGS), score) for rule, rx, score in self.PATTERNS]
        super().__init__(supported_entities=[self.ENTITY], name=type(self).__name__, supported_language="en")

    def load(self) -> None:
        pass

    def precheck(self, text: str) -> bool:
        if not self.HINTS:
            return True
        haystack = text.lower() if self.HINTS_LOWER else text
        return any(h in haystack for h in self.HINTS)

    def validate(self, value: str, text: str, start: int) -> bool:
        return True

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if not self.precheck(text):
            return []
        out: list[RecognizerResult] = []
        for rule, rx, score in self._compiled:
            for m in rx.finditer(text):
                start, end = m.span("v") if "v" in rx.groupindex else m.span()
                if end <= start or not self.validate(text[start:end], text, start):
                    continue
                out.append(result(self, self.ENTITY, start, end, score, rule))
        return out
