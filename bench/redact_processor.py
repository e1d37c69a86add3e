"""In-process micro-benchmark of ``redact`` (and ``encrypt``) alone on the benchmark traffic.

Requests come from ``bench.traffic.build_templates()`` with fresh trace ids, and in a share of
requests (``--new``, default 10%) every number inside a string value is redrawn, so those
requests carry values the value cache has never seen (new order ids, client IPs, customer
e-mails): mostly repeated values, some new, as real traffic varies. Decoding happens before
the clock starts (parsing is the receiver's cost). Wall-clock items/s, single caller thread.

    .venv/bin/python -m bench.redact_processor [--batches 600] [--rounds 3] [--new 0.1] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import statistics
import tempfile
import time
from collections.abc import Iterator, MutableSequence
from pathlib import Path
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bench.traffic import build_templates, patched
from errorgate.component import PROCESSORS, ComponentContext, Processor, load_builtin_components
from errorgate.signals import Batch, Signal, iter_log_records, iter_metrics, iter_spans
from errorgate.telemetry import Telemetry

_NUMBER = re.compile(r"\d+")


def _strings(attrs: MutableSequence[KeyValue]) -> Iterator[AnyValue]:
    for kv in attrs:
        if kv.value.WhichOneof("value") == "string_value":
            yield kv.value


def _refresh(batch: Batch, rng: random.Random) -> None:
    """Redraw every number inside the request's string values (same number of digits)."""

    def redraw(text: str) -> str:
        return _NUMBER.sub(
            lambda m: str(rng.randrange(10 ** (len(m.group()) - 1), 10 ** len(m.group()))), text
        )

    req: Any = batch.request
    if batch.signal is Signal.TRACES:
        for _, _, span in iter_spans(req):
            for v in _strings(span.attributes):
                v.string_value = redraw(v.string_value)
            if span.status.message:
                span.status.message = redraw(span.status.message)
    elif batch.signal is Signal.LOGS:
        for _, _, rec in iter_log_records(req):
            if rec.body.WhichOneof("value") == "string_value":
                rec.body.string_value = redraw(rec.body.string_value)
    else:
        for _, _, metric in iter_metrics(req):
            kind = metric.WhichOneof("data")
            for point in getattr(metric, kind).data_points if kind else ():
                for v in _strings(point.attributes):
                    v.string_value = redraw(v.string_value)


def make_batches(n: int, new_share: float, seed: int, start: int = 0) -> list[Batch]:
    """``n`` decoded requests in the traffic mix, each with fresh ids; ``new_share`` of them with
    redrawn values."""
    rng = random.Random(seed)
    templates = build_templates()
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        sig = Signal(t.signal)
        batch = Batch(sig, sig.parse(patched(t, start + i + 1)), received_at=0.0)
        if rng.random() < new_share:
            _refresh(batch, rng)
        out.append(batch)
    return out


def build(name: str, tmp: Path, telemetry: Telemetry, settings: dict[str, object]) -> Processor:
    factory = PROCESSORS.get(name)
    assert factory is not None, name
    ctx = ComponentContext(
        component_id=name, data_dir=tmp, telemetry=telemetry, logger=logging.getLogger("bench")
    )
    return factory.create(factory.config_model.model_validate(settings), ctx)


def run_chain(procs: list[Processor], batches: list[Batch]) -> float:
    items = sum(b.item_count() for b in batches)
    begin = time.perf_counter()
    for b in batches:
        current = [b]
        for p in procs:
            current = [out for c in current for out in p.process(c).batches]
    return items / (time.perf_counter() - begin)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.redact_processor", description=__doc__)
    ap.add_argument("--batches", type=int, default=600, help="requests per measured run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new", type=float, default=0.1, help="share of requests with never-seen values")
    ap.add_argument("--workers", default="0", help="redact's workers setting (0, auto or a number)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load_builtin_components()
    workers: object = args.workers if args.workers == "auto" else int(args.workers)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="eg-bench-redact-") as tmp_name:
        tmp = Path(tmp_name)
        telemetry = Telemetry()
        begin = time.perf_counter()
        encrypt = build("encrypt", tmp, telemetry, {})
        redact = build("redact", tmp, telemetry, {"workers": workers})
        results["construct s"] = [time.perf_counter() - begin]
        begin = time.perf_counter()
        run_chain([redact], make_batches(9, 0.0, seed=99, start=10_000_000))
        results["first batches s"] = [time.perf_counter() - begin]
        counter = 0
        for r in range(args.rounds):
            for label, procs in (
                ("redact", [redact]),
                ("encrypt", [encrypt]),
                ("redact+encrypt", [redact, encrypt]),
            ):
                batches = make_batches(args.batches, args.new, seed=r * 7 + len(label), start=counter)
                counter += args.batches
                results.setdefault(f"{label} items/s", []).append(run_chain(procs, batches))
            cold = make_batches(args.batches // 3, 1.0, seed=1000 + r, start=counter)
            counter += len(cold)
            results.setdefault("redact all-new items/s", []).append(run_chain([redact], cold))
        redact.shutdown()
    summary = {k: statistics.median(v) for k, v in results.items()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:<28}{value:>14,.2f}" if key.endswith(" s") else f"{key:<28}{value:>14,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
