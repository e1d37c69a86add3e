"""In-process micro-benchmark of the error-intelligence processors (issue 3's throughput target).

Builds the benchmark traffic (``bench.traffic``), decodes it into requests with fresh trace ids
(decoding happens before the clock starts: parsing is the receiver's cost, not a processor's),
then pushes the batches through ``classify``, ``sample`` and ``retention`` alone and through the
chain assembler → classify → sample → retention with a simulated clock (``poll`` every 50 ms of
simulated time, as the gateway does), printing items/s single-threaded. In the chain a request
is decoded again just before it enters (untimed), as the receiver does, so it is warm in the
caches; "assembly" includes what the pipeline does for it (keeping the originals of what enters
and leaves the assembler, see ``Pipeline.consume``/``release``) and the final poll.

    .venv/bin/python -m bench.processors [--batches 1500] [--rounds 3] [--only chain]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.traffic import build_templates, patched
from errorgate.component import PROCESSORS, ComponentContext, Output, Processor
from errorgate.pipeline.assembly.assembler import TraceAssembler
from errorgate.processors.sample import SampleConfig
from errorgate.signals import WIRE_NOTE, Batch, Signal, copy_request, count_items
from errorgate.telemetry import Telemetry

SPANS_PER_SECOND = 30_000  # simulated arrival rate: sets how many traces each poll releases
POLL_EVERY = 0.05  # seconds of simulated time, as the gateway's poll thread
DECISION_WAIT = "1s"  # as ``make bench`` configures ``sample``
T0 = 1_764_000_000.0


def make_batches(signal: str, n: int, start: int = 0, whole_traces: bool = False) -> list[Batch]:
    """``n`` decoded requests of ``signal``, cycling through the templates, each with fresh ids.

    Every template trace (5 spans, 10 per request) gets a fresh random trace id. The ids
    ``bench.traffic.patched`` writes (what ``make bench`` sends) are a counter in the low bytes,
    and the low 7 bytes are the W3C randomness ``sample`` keeps healthy traces by: with them
    every healthy trace fell below the keep threshold ("chain kept share 0.00"), so the
    stages after ``sample`` never saw a span. (``whole_traces`` is kept for old command lines;
    ``patched`` already keeps each template trace's spans under one id.)"""
    del whole_traces
    templates = [t for t in build_templates() if t.signal == signal]
    sig = Signal(signal)
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        request = sig.parse(patched(t, start + i + 1))
        if signal == "traces":
            rng = random.Random(start + i)  # random ids: the healthy keep share is then realistic
            fresh: dict[bytes, bytes] = {}
            for rs in request.resource_spans:  # type: ignore[union-attr]
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        tid = fresh.get(span.trace_id)
                        if tid is None:
                            tid = fresh[span.trace_id] = rng.randbytes(16)
                        span.trace_id = tid
        out.append(Batch(sig, request, received_at=T0))
    return out


def context(tmp: Path, telemetry: Telemetry, component_id: str) -> ComponentContext:
    return ComponentContext(
        component_id=component_id, data_dir=tmp, telemetry=telemetry, logger=logging.getLogger("bench")
    )


def build(name: str, tmp: Path, telemetry: Telemetry, settings: dict[str, object] | None = None) -> Processor:
    factory = PROCESSORS.get(name)
    assert factory is not None, name
    return factory.create(factory.config_model.model_validate(settings or {}), context(tmp, telemetry, name))


def timed(run: Callable[[], int]) -> tuple[float, int]:
    begin = time.process_time()
    items = run()
    return time.process_time() - begin, items


def alone(name: str, signal: str, batches: list[Batch], tmp: Path, complete: bool) -> tuple[float, int]:
    """One processor on its own (``complete``: batches marked as assembled whole traces)."""
    proc = build(name, tmp, Telemetry(), {"decision_wait": DECISION_WAIT} if name == "sample" else None)
    if complete:
        for b in batches:
            b.notes["complete_traces"] = True
    items = sum(b.item_count() for b in batches)

    def run() -> int:
        for b in batches:
            proc.process(b)
        return items

    return timed(run)


def chain(trace_batches: list[Batch], tmp: Path) -> tuple[float, int, int, float, dict[str, float]]:
    """Assembler → classify → sample → retention: (seconds, spans in, spans out, worst poll with
    everything it released run through the chain (seconds), seconds per stage)."""
    telemetry = Telemetry()
    sample_settings: dict[str, object] = {"decision_wait": DECISION_WAIT}
    procs = [
        build(n, tmp, telemetry, sample_settings if n == "sample" else None)
        for n in ("classify", "sample", "retention")
    ]
    sample_cfg = SampleConfig.model_validate(sample_settings)
    assembler = TraceAssembler.from_sample_config(sample_cfg, context(tmp, telemetry, "assembly/traces"))
    spans_in = sum(b.item_count() for b in trace_batches)
    per_batch = spans_in / len(trace_batches)
    dt = per_batch / SPANS_PER_SECOND
    out_spans = 0
    worst_poll = 0.0
    stage_seconds = dict.fromkeys(["assembly", "classify", "sample", "retention"], 0.0)

    def downstream(out: Output) -> None:
        nonlocal out_spans
        for name, stage in zip(("classify", "sample", "retention"), procs, strict=True):
            nxt = Output()
            begin = time.process_time()
            for b in out.batches:
                nxt.merge(stage.process(b))
            stage_seconds[name] += time.process_time() - begin
            out = nxt
        out_spans += sum(count_items(b.request) for b in out.batches)

    def handle(out: Output, released: bool) -> None:
        begin = time.process_time()
        if released:  # as Pipeline.release: the released original, for the dead-letter queue
            for b in out.batches:  # (the bytes stay for classify, which reads them)
                if not isinstance(b.notes.get(WIRE_NOTE), bytes):
                    copy_request(b.request)
        stage_seconds["assembly"] += time.process_time() - begin
        downstream(out)
        begin = time.process_time()
        for cb in out.on_persisted:
            cb()
        stage_seconds["assembly"] += time.process_time() - begin

    decode_seconds = 0.0

    def intake(b: Batch) -> Output:
        nonlocal decode_seconds
        # As the gateway: decoded just before the pipeline gets it (warm in the caches; not timed)...
        begin = time.process_time()
        b.request = Signal.TRACES.parse(b.request.SerializeToString())
        decode_seconds += time.process_time() - begin
        # ...then Pipeline.consume keeps the original: the bytes it hands an assembler that reads
        # them, else a copy. Either is the assembler's cost (without it there would be neither).
        begin = time.process_time()
        if assembler.capabilities.reads_wire_note:
            b.notes[WIRE_NOTE] = b.request.SerializeToString()
        else:
            copy_request(b.request)
        out = assembler.process(b)
        stage_seconds["assembly"] += time.process_time() - begin
        return out

    def run() -> int:
        nonlocal worst_poll
        next_poll = T0 + POLL_EVERY
        now = T0
        for i, b in enumerate(trace_batches):
            now = T0 + i * dt
            b.received_at = now
            handle(intake(b), released=False)
            if now >= next_poll:
                begin = time.process_time()
                out = assembler.poll(now)
                stage_seconds["assembly"] += time.process_time() - begin
                handle(out, released=True)
                worst_poll = max(worst_poll, time.process_time() - begin)
                next_poll += POLL_EVERY
        begin = time.process_time()
        out = assembler.poll(now + 3600)
        stage_seconds["assembly"] += time.process_time() - begin
        handle(out, released=True)
        return spans_in

    seconds, _ = timed(run)
    assembler.shutdown()
    return seconds - decode_seconds, spans_in, out_spans, worst_poll, stage_seconds


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.processors", description=__doc__)
    ap.add_argument("--batches", type=int, default=1500, help="trace requests (50 spans each) per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma list of: classify,sample,retention,chain")
    ap.add_argument(
        "--whole-traces",
        action="store_true",
        help="no effect (kept for old command lines): traces are always the templates' 5-span traces",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    wanted = set(filter(None, args.only.split(","))) or {"classify", "sample", "retention", "chain"}
    results: dict[str, list[float]] = {}
    counter = 0

    def fresh(signal: str, n: int) -> list[Batch]:
        nonlocal counter
        counter += n
        return make_batches(signal, n, counter, args.whole_traces)

    n_logs = max(1, args.batches // 2)
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="eg-bench-proc-") as tmp_name:
            tmp = Path(tmp_name)
            for name in ("classify", "sample", "retention"):
                if name not in wanted:
                    continue
                for signal, n in (("traces", args.batches), ("logs", n_logs)):
                    secs, items = alone(name, signal, fresh(signal, n), tmp, complete=signal == "traces")
                    results.setdefault(f"{name} {signal}", []).append(items / secs)
            if "chain" in wanted:
                secs, spans_in, spans_out, worst, stages = chain(fresh("traces", args.batches), tmp)
                results.setdefault("chain traces", []).append(spans_in / secs)
                for stage, stage_secs in stages.items():
                    results.setdefault(f"chain: {stage} share", []).append(stage_secs / secs)
                for stage, stage_secs in stages.items():
                    results.setdefault(f"chain: {stage} µs/span", []).append(stage_secs * 1e6 / spans_in)
                results.setdefault("chain worst poll ms", []).append(worst * 1000)
                results.setdefault("chain kept share", []).append(spans_out / spans_in)
    summary = {k: statistics.median(v) for k, v in results.items()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'stage':<26}{'median (items/s unless noted)':>32}")
        for key, value in summary.items():
            print(
                f"{key:<26}{value:>32,.2f}"
                if "share" in key or "s/" in key or "ms" in key
                else f"{key:<26}{value:>32,.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
