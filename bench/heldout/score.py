"""Score redacted outputs of the held-out items; run errorgate and default Presidio on them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.heldout.corpus import Item

TOKEN = re.compile(r"\w+")
Redactor = Callable[[Sequence[str]], list[str]]


def _survives(token: str, output: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(token)}(?!\w)", output) is not None


def leaked(value: str, output: str) -> bool:
    """Any 4+-character token of the value left in the output (the whole value when it has none)."""
    tokens = [t for t in TOKEN.findall(value) if len(t) >= 4]
    return any(_survives(t, output) for t in tokens) if tokens else value in output


@dataclass
class Report:
    values: Counter[str] = field(default_factory=Counter)
    leaks: Counter[str] = field(default_factory=Counter)
    words: int = 0
    words_kept: int = 0
    decoys: int = 0
    decoys_kept: int = 0

    def leak(self, entity: str | None = None) -> float:
        if entity is None:
            return sum(self.leaks.values()) / max(1, sum(self.values.values()))
        return self.leaks[entity] / max(1, self.values[entity])

    def as_dict(self) -> dict[str, Any]:
        return {
            "items_values": sum(self.values.values()),
            "leak_overall": round(self.leak(), 4),
            "leak_by_entity": {e: round(self.leak(e), 4) for e in sorted(self.values)},
            "plain_words_kept": round(self.words_kept / max(1, self.words), 4),
            "decoys_kept": round(self.decoys_kept / max(1, self.decoys), 4),
        }

    def line(self, label: str) -> str:
        per = "  ".join(f"{e} {self.leak(e):6.1%}" for e in sorted(self.values))
        d = self.as_dict()
        return (
            f"{label:<22} leak {self.leak():6.1%}  [{per}]  plain words kept "
            f"{d['plain_words_kept']:.1%}  decoys kept {d['decoys_kept']:.1%}"
        )


def score(items: Sequence[Item], outputs: Sequence[str]) -> Report:
    report = Report()
    for item, out in zip(items, outputs, strict=True):
        plain = item.text
        for entity, value in item.pii:
            report.values[entity] += 1
            report.leaks[entity] += leaked(value, out)
            plain = plain.replace(value, " ")
        for decoy in item.decoys:
            report.decoys += 1
            report.decoys_kept += decoy in out
            plain = plain.replace(decoy, " ")
        out_tokens = Counter(TOKEN.findall(out))
        for word in TOKEN.findall(plain):
            if len(word) < 2 or word.isdigit():
                continue
            report.words += 1
            if out_tokens[word] > 0:
                out_tokens[word] -= 1
                report.words_kept += 1
    return report


def mask(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    out, last = [], 0
    for start, end, entity in sorted(spans):
        if start < last:
            start = last
        if end <= start:
            continue
        out.append(text[last:start])
        out.append(f"<{entity}>")
        last = end
    out.append(text[last:])
    return "".join(out)


def errorgate_redactor(detector: Any) -> Redactor:
    """Free text through the redact processor's detector (as log bodies and exception
    messages are), masked span by span."""

    def run(texts: Sequence[str]) -> list[str]:
        found = detector.detect([(t, True) for t in texts])
        return [mask(t, [(f.start, f.end, f.entity_type) for f in found[(t, True)] or ()]) for t in texts]

    return run


def presidio_redactor(analyzer: Any) -> Redactor:
    """Default Presidio: ``AnalyzerEngine`` + ``AnonymizerEngine``, default configuration."""
    from presidio_anonymizer import AnonymizerEngine

    anonymizer = AnonymizerEngine()

    def run(texts: Sequence[str]) -> list[str]:
        return [
            anonymizer.anonymize(text=t, analyzer_results=analyzer.analyze(t, language="en")).text
            for t in texts
        ]

    return run
