"""Shared base: regex patterns with a cheap pre-check, an optional value group, validation."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

# ``(value, value.lower(), digit count)`` -> may any pattern of the recognizer match?
Gate = Callable[[str, str, int], bool]


def digit_count(text: str) -> int:
    return sum(map(text.count, "0123456789"))


# Characters after which a capital is the grammar's, not the writer's: sentence ends, quotes,
# brackets, ``key:``/``key=`` and other separators of telemetry text.
SENTENCE_OPENERS = frozenset(".!?:;\"'“([{=/<>-*#")


def opens_sentence(text: str, start: int) -> bool:
    """The word at ``start`` begins the text or follows (across spaces) one of
    ``SENTENCE_OPENERS``. Scans back from ``start`` without copying: it runs once per
    capitalised word, so a slice of everything before would make long values quadratic."""
    i = start - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    return i < 0 or text[i] in SENTENCE_OPENERS


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
    # A C-speed necessary condition for any pattern to match (a loosened pattern: anchors and
    # validators dropped), checked by the engine before calling ``analyze`` at all; with
    # ``GATE_LOWER`` it is searched in the lower-cased value.
    GATE: ClassVar[str | None] = None
    GATE_LOWER: ClassVar[bool] = False
    MIN_DIGITS: ClassVar[int] = 0
    MIN_LEN: ClassVar[int] = 0

    def __init__(self) -> None:
        self._compiled = [(rule, re.compile(rx, self.FLAGS), score) for rule, rx, score in self.PATTERNS]
        super().__init__(supported_entities=[self.ENTITY], name=type(self).__name__, supported_language="en")

    def load(self) -> None:
        pass

    def gate(self) -> Gate | None:
        if self.GATE:
            rx, on_lower = self.GATE, self.GATE_LOWER
        elif self.HINTS:
            # Exactly ``precheck``: any hint in the value (lower-cased when HINTS_LOWER).
            rx, on_lower = "|".join(re.escape(h) for h in self.HINTS), self.HINTS_LOWER
        else:
            return None
        search = re.compile(rx).search
        min_digits, min_len = self.MIN_DIGITS, self.MIN_LEN

        def gate(text: str, lower: str, digits: int) -> bool:
            return (
                digits >= min_digits
                and len(text) >= min_len
                and search(lower if on_lower else text) is not None
            )

        return gate

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


class FreeTextRecognizer(EntityRecognizer):
    """A recognizer of one entity type that the engine runs on free text only (log bodies,
    messages), as it runs NER: on span names and structured attributes its cues (a capitalised
    word after "user", a title) would redact identifiers."""

    ENTITY: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(supported_entities=[self.ENTITY], name=type(self).__name__, supported_language="en")

    def load(self) -> None:
        pass

    def gate(self) -> Gate | None:
        return None
