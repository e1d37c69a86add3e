"""In-process micro-benchmark of ``redact`` (and ``encrypt``) alone on the benchmark traffic.

Requests come from ``bench.traffic.build_templates()`` with fresh trace ids, and in a share of
requests (``--new``, default 10%) every number inside a string value is redrawn, so those
requests carry values the value cache has never seen (new order ids, client IPs, customer
e-mails): mostly repeated values, some new, as real traffic varies. Decoding happens before
the clock starts (parsing is the receiver's cost). Wall-clock items/s, single caller thread.

    .venv/bin/python -m bench.redact_processor [--batches 600] [--rounds 3] [--new 0.1] [--workers 0]

``--chain`` instead measures redact and encrypt where the gateway runs them: after the trace
assembler, classify and sample (which keeps ~10 % of healthy traces and every failing one), as
CPU µs per *received* span or log record (what the gateway's CPU per item is made of).
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
from errorgate.component import PROCESSORS, ComponentContext, Processor
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


def chain(batches: int) -> dict[str, float]:
    """CPU µs per received item of each stage of the full profile's chain, traces and logs."""
    from bench import processors as bp
    from errorgate.component import Output
    from errorgate.pipeline.assembly.assembler import TraceAssembler
    from errorgate.processors.sample import SampleConfig
    from errorgate.signals import WIRE_NOTE

    names = ("classify", "sample", "redact", "encrypt", "retention")
    sample_settings = {"decision_wait": bp.DECISION_WAIT}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="eg-bench-redact-") as tmp_name:
        tmp, telemetry = Path(tmp_name), Telemetry()
        settings: dict[str, dict[str, object]] = {"sample": sample_settings, "redact": {"workers": 0}}
        procs = [bp.build(n, tmp, telemetry, settings.get(n)) for n in names]
        assembler = TraceAssembler.from_sample_config(
            SampleConfig.model_validate(sample_settings), bp.context(tmp, telemetry, "assembly/traces")
        )
        seconds = dict.fromkeys(names, 0.0)

        def downstream(result: Output) -> None:
            for name, proc in zip(names, procs, strict=True):
                nxt = Output()
                begin = time.process_time()
                for b in result.batches:
                    nxt.merge(proc.process(b))
                seconds[name] += time.process_time() - begin
                result = nxt

        def traces(requests: list[Batch]) -> None:
            dt = 50 / bp.SPANS_PER_SECOND
            next_poll = now = bp.T0
            for i, b in enumerate(requests):
                now = bp.T0 + i * dt
                b.received_at = now
                if assembler.capabilities.reads_wire_note:
                    b.notes[WIRE_NOTE] = b.request.SerializeToString()
                downstream(assembler.process(b))
                if now >= next_poll:
                    downstream(assembler.poll(now))
                    next_poll += bp.POLL_EVERY
            downstream(assembler.poll(now + 3600))

        traces(bp.make_batches("traces", 200, 10**6))  # warm: value caches, memo, decisions
        for b in bp.make_batches("logs", 100, 10**6):
            downstream(Output.of(b))
        for signal in ("traces", "logs"):
            seconds.update(dict.fromkeys(names, 0.0))
            requests = bp.make_batches(signal, batches if signal == "traces" else batches // 2)
            items = sum(b.item_count() for b in requests)
            if signal == "traces":
                traces(requests)
            else:
                for b in requests:
                    downstream(Output.of(b))
            for name in names:
                out[f"{signal}: {name} µs/item"] = seconds[name] * 1e6 / items
        assembler.shutdown()
        procs[names.index("redact")].shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.redact_processor", description=__doc__)
    ap.add_argument("--batches", type=int, default=600, help="requests per measured run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new", type=float, default=0.1, help="share of requests with never-seen values")
    ap.add_argument("--workers", default="0", help="redact's workers setting (0, auto or a number)")
    ap.add_argument("--chain", action="store_true", help="µs per received item in the full chain")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.chain:
        figures = chain(args.batches)
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            for key, value in figures.items():
                print(f"{key:<32}{value:>10.3f}")
        return 0
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
