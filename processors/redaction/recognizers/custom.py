"""Recognizers declared in YAML (packs or the processor config): regexes with a score and
context words, and deny-lists. No code needed to add one."""

from __future__ import annotations

import regex
from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from errorgate.processors.redaction.recognizers.base import Gate
from errorgate.processors.redaction.specs import CustomRecognizerSpec


class YamlRecognizer(PatternRecognizer):
    def __init__(self, spec: CustomRecognizerSpec) -> None:
        self.spec = spec
        super().__init__(
            supported_entity=spec.entity_type,
            name=spec.name,
            patterns=[Pattern(p.name, p.regex, p.score) for p in spec.patterns] or None,  # type: ignore[arg-type]
            deny_list=spec.deny_list or None,  # type: ignore[arg-type]
            deny_list_score=spec.deny_list_score,
            context=spec.context or None,  # type: ignore[arg-type]
        )
        self._context = [w.lower() for w in spec.context]

    def gate(self) -> Gate:
        """Any pattern (deny-list included) found at all; Presidio's per-pattern bookkeeping
        (timestamps, explanations) costs ten times the search itself."""
        patterns: list[Pattern] = self.patterns  # type: ignore[has-type]
        compiled = [regex.compile(p.regex, flags=self.global_regex_flags) for p in patterns]

        def search(text: str, lower: str, digits: int) -> bool:
            return any(rx.search(text) is not None for rx in compiled)

        return search

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = super().analyze(text, entities, None, regex_flags)
        if results and self._context:
            lower = text.lower()
            if any(w in lower for w in self._context):
                for r in results:
                    r.score = min(1.0, r.score + self.spec.context_boost)
        for r in results:
            r.recognition_metadata = {**(r.recognition_metadata or {}), "rule": self.spec.name}
        return results
