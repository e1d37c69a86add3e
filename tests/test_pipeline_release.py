"""Items a processor releases later (tail sampling, trace assembly) get the same failure
handling as items on the way in: a later processor raising dead-letters them as released."""

from __future__ import annotations

import threading
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from errorgate import attributes
from errorgate.component import Capabilities, Output, Processor
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.pipeline.stages import Pipeline, Stage, poll_all
from errorgate.signals import Batch, Signal, iter_spans
from errorgate.telemetry import Telemetry


class HoldUntilPolled(Processor):
    def __init__(self) -> None:
        self.held: list[Batch] = []

    def process(self, batch: Batch) -> Output:
        self.held.append(batch)
        return Output(dropped={"sampled": 1})  # type: ignore[arg-type]

    def poll(self, now: float) -> Output:
        out, self.held = Output(batches=self.held), []
        return out


class TouchThenFail(Processor):
    def process(self, batch: Batch) -> Output:
        for _, _, span in iter_spans(batch.request):  # type: ignore[arg-type]
            span.attributes.add(key="touched")
            if span.name == "boom":
                raise RuntimeError("broken for alice@example.com")
        return Output.of(batch)


def _request(name: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.name = name
    span.trace_id = b"\x01" * 16
    span.span_id = b"\x02" * 8
    return req


def test_released_batch_failing_later_is_dead_lettered_as_released(tmp_path: Path) -> None:
    telemetry = Telemetry()
    dlq = DeadLetterStore(tmp_path / "dlq", telemetry)
    hold = HoldUntilPolled()
    pipeline = Pipeline(
        name="traces",
        signal=Signal.TRACES,
        receivers=["otlp"],
        stages=[Stage("hold", hold), Stage("touch", TouchThenFail())],
        exporters=[],
        telemetry=telemetry,
        dlq=dlq,
        lock=threading.RLock(),
    )
    pipeline.consume(Batch(Signal.TRACES, _request("boom")))
    assert dlq.list() == []  # held, not failed yet
    poll_all([pipeline], now=0.0)
    [entry] = dlq.list()
    assert entry.reason == "processor_error" and entry.source == "processor:touch"
    assert "alice" not in entry.detail
    _, stored = dlq.load(entry.id)
    [(_, _, span)] = list(iter_spans(stored))  # type: ignore[arg-type]
    assert span.name == "boom" and not attributes.has(span.attributes, "touched")
    assert telemetry.dead_lettered.labels("traces", "processor_error")._value.get() == 1
    assert telemetry.dropped.labels("traces", "sampled")._value.get() == 1


def test_assembled_batch_failing_later_is_dead_lettered_from_the_released_bytes(tmp_path: Path) -> None:
    import logging

    from errorgate.component import ComponentContext
    from errorgate.pipeline.assembly.assembler import AssemblyConfig, TraceAssembler

    telemetry = Telemetry()
    dlq = DeadLetterStore(tmp_path / "dlq", telemetry)
    context = ComponentContext("assembly", tmp_path, telemetry, logging.getLogger("t"))
    pipeline = Pipeline(
        name="traces",
        signal=Signal.TRACES,
        receivers=["otlp"],
        stages=[
            Stage("assembly", TraceAssembler(AssemblyConfig(decision_wait=1), context)),
            Stage("touch", TouchThenFail()),
        ],
        exporters=[],
        telemetry=telemetry,
        dlq=dlq,
        lock=threading.RLock(),
    )
    pipeline.consume(Batch(Signal.TRACES, _request("boom"), received_at=100.0))
    assert dlq.list() == []  # held
    poll_all([pipeline], now=101.0)
    [entry] = dlq.list()
    assert entry.source == "processor:touch"
    _, stored = dlq.load(entry.id)
    [(_, _, span)] = list(iter_spans(stored))  # type: ignore[arg-type]
    assert span.name == "boom" and not attributes.has(span.attributes, "touched")


class SeeWire(Processor):
    """Records whether the released batch came with the bytes it was built from."""

    def __init__(self, reads: bool) -> None:
        # Declared per instance: the test runs the pipeline with and without the capability.
        self.capabilities = Capabilities(reads_wire_note=reads)  # type: ignore[misc]
        self.seen: list[object] = []

    def process(self, batch: Batch) -> Output:
        from errorgate.signals import WIRE_NOTE

        self.seen.append(batch.notes.pop(WIRE_NOTE, None))
        return Output.of(batch)


def test_released_bytes_reach_a_next_processor_that_reads_them(tmp_path: Path) -> None:
    import logging

    from errorgate.component import ComponentContext
    from errorgate.pipeline.assembly.assembler import AssemblyConfig, TraceAssembler

    for reads in (True, False):
        telemetry = Telemetry()
        context = ComponentContext("assembly", tmp_path / str(reads), telemetry, logging.getLogger("t"))
        see = SeeWire(reads)
        pipeline = Pipeline(
            name="traces",
            signal=Signal.TRACES,
            receivers=["otlp"],
            stages=[
                Stage("assembly", TraceAssembler(AssemblyConfig(decision_wait=1), context)),
                Stage("see", see),
            ],
            exporters=[],
            telemetry=telemetry,
            dlq=DeadLetterStore(tmp_path / f"dlq{reads}", telemetry),
            lock=threading.RLock(),
        )
        pipeline.consume(Batch(Signal.TRACES, _request("op"), received_at=100.0))
        poll_all([pipeline], now=101.0)
        [seen] = see.seen
        if reads:  # the released request's bytes, exactly
            assert isinstance(seen, bytes)
            assert ExportTraceServiceRequest.FromString(seen) == _request("op")
        else:  # void for a processor that may change the request first
            assert seen is None
