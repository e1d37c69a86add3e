"""One pipeline per ``service.pipelines`` entry: processors in order, then fan-out to exporters.

Threading model (see README "Architecture"): receivers call in from many threads.
Processors that do not declare themselves thread-safe (classify, sample, retention, the trace
assembler) run under one gateway-wide lock so they see a consistent order; processors that
declare ``Capabilities(thread_safe=True)`` (redact, encrypt, the processor worker's stage) run
outside it, so CPU-heavy stateless work overlaps and can fan out to worker processes of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from errorgate.component import Capabilities, Output, Processor
from errorgate.delivery.exporter import item_count
from errorgate.errors import Backpressure, ProcessingFailed, StorageUnavailable, raised_at
from errorgate.pipeline.worker.client import RemoteChain, WorkerFailed
from errorgate.signals import WIRE_NOTE, Batch, ExportRequest, Signal, copy_request

if TYPE_CHECKING:
    from errorgate.delivery.dlq import DeadLetterStore
    from errorgate.delivery.exporter import QueuedExporter
    from errorgate.telemetry import Telemetry

log = logging.getLogger("errorgate.pipeline")

# How long a batch that already went through the processors waits for queue room
# before it is dead-lettered instead (the up-front capacity check makes this rare).
ENQUEUE_WAIT_SECONDS = 5.0


@dataclass
class Stage:
    component_id: str
    processor: Processor

    @property
    def capabilities(self) -> Capabilities:
        return self.processor.capabilities


@dataclass
class Pipeline:
    name: str
    signal: Signal
    receivers: list[str]
    stages: list[Stage]
    exporters: list[tuple[str, QueuedExporter]]
    telemetry: Telemetry
    dlq: DeadLetterStore
    lock: threading.RLock
    # Set when the gateway stops: a release that cannot be queued for lack of disk then stays in
    # the hold log (released again at the next start) instead of waiting for space.
    stopping: threading.Event = field(default_factory=threading.Event)
    _stage_index: dict[int, int] = field(default_factory=dict)
    _first_reads_wire: bool = False

    def __post_init__(self) -> None:
        self._stage_index = {id(s.processor): i for i, s in enumerate(self.stages)}
        self._first_reads_wire = bool(self.stages) and self.stages[0].capabilities.reads_wire_note

    # ------------------------------------------------------------ intake side

    def has_room(self, nbytes: int) -> bool:
        return all(exporter.has_room(nbytes) for _, exporter in self.exporters)

    def consume(self, batch: Batch, wire: bytes | None = None) -> None:
        """Run ``batch`` through every stage and queue the result. Raises ProcessingFailed.
        ``wire``: the request exactly as serializing it gives, if at hand (the received body)."""
        original: ExportRequest | bytes | None = None
        if self.stages:
            # Kept so a processor failure dead-letters the batch as received, never half-processed:
            # a copy (C), or, for a first processor that serializes the request anyway (the trace
            # assembler, the processor worker), the serialized request, which it is handed (parsed
            # again only on a failure).
            if self._first_reads_wire:
                if wire is None:
                    wire = batch.request.SerializeToString()
                original = batch.notes[WIRE_NOTE] = wire
            else:
                original = copy_request(batch.request)
        try:
            out = self._continue(Output(batches=[batch]), 0, urgent=True)
        except _StageFailed as failure:
            assert original is not None
            reason = f"{failure.error_type} in processor {failure.component_id}"
            self.dlq.put(
                self.signal,
                self.signal.parse(original) if isinstance(original, bytes) else original,
                reason="processor_error",
                detail=reason,
                source=f"processor:{failure.component_id}",
            )
            raise ProcessingFailed(
                f"processor {failure.component_id} failed; the batch was dead-lettered"
            ) from None
        self._deliver(out, urgent=True)

    def release(self, stage_index: int, out: Output) -> bool:
        """Items a processor released on its own (poll/flush) continue after that processor.
        False when they could not be made durable downstream (no disk space): the processor must
        then keep its durable copies, which come back at the next start."""
        try:
            self._release(stage_index, out)
        except StorageUnavailable:
            log.error(
                "released items could not be queued (no disk space); they stay held until the next start"
            )
            return False
        return True

    def _release(self, stage_index: int, out: Output) -> None:
        later_stages = stage_index + 1 < len(self.stages)
        # As with consume(): a later processor failing dead-letters the batch as released, not
        # half-processed. A processor that built the batch from bytes hands them over (WIRE_NOTE);
        # they stay on the batch for a next processor that reads them (bytes never change).
        keep = later_stages and self.stages[stage_index + 1].capabilities.reads_wire_note
        originals = [_wire(b, keep) for b in out.batches] if later_stages else []
        try:
            out = self._continue(out, stage_index + 1, urgent=False)
        except _StageFailed as failure:
            for original in originals:
                self.dlq.put(
                    self.signal,
                    self.signal.parse(original) if isinstance(original, bytes) else original,
                    reason="processor_error",
                    detail=f"{failure.error_type} in processor {failure.component_id}",
                    source=f"processor:{failure.component_id}",
                )
            for reason, n in out.dropped.items():
                self.telemetry.record_dropped(self.signal.value, reason, n)
            for cb in out.on_persisted:
                cb()
            return
        self._deliver(out, urgent=False)

    def index_of(self, processor: Processor) -> int | None:
        return self._stage_index.get(id(processor))

    # ------------------------------------------------------------ internals

    def _continue(self, out: Output, start: int, urgent: bool) -> Output:
        """``urgent``: a client waits for this (intake), not a background release. What a
        processor that releases in the background passes on (the assembler's late spans)
        queues behind its earlier releases instead, so a late span meets its trace's decision."""
        for index in range(start, len(self.stages)):
            if not out.batches:
                break
            stage = self.stages[index]
            nxt = Output(dropped=out.dropped, on_persisted=out.on_persisted)
            capabilities = stage.capabilities
            guard: AbstractContextManager[object] = nullcontext() if capabilities.thread_safe else self.lock
            timed = not capabilities.times_itself
            # A stage in the processor worker takes every batch of a release before answering
            # the first, so the worker never waits for the gateway between them.
            remote = stage.processor if isinstance(stage.processor, RemoteChain) else None
            sent: list[Future[Any]] = []
            for i, batch in enumerate(out.batches):
                begin = time.perf_counter()
                try:
                    if remote is not None:
                        if not sent:
                            sent = [remote.submit(b, urgent) for b in out.batches]
                        result = remote.finish(sent[i])
                    else:
                        with guard:
                            result = stage.processor.process(batch)
                except Backpressure:
                    raise  # a processor could not make what it holds durable: the client retries
                except Exception as e:  # a broken processor must not take the gateway down
                    # A stage in the processor worker names the processor that failed there.
                    if isinstance(e, WorkerFailed):
                        component_id, error_type, where = e.component_id, e.error_type, e.where
                    else:
                        component_id, error_type, where = stage.component_id, type(e).__name__, raised_at(e)
                    self.telemetry.processor_failures.labels(component_id, self.signal.value).inc()
                    # Exception text may quote telemetry values (PII): log the type and place only.
                    log.error(
                        "processor failed",
                        extra={"processor": component_id, "error_type": error_type, "where": where},
                    )
                    raise _StageFailed(component_id, error_type) from None
                finally:
                    if timed:
                        self.telemetry.child(
                            self.telemetry.processor_latency, stage.component_id, self.signal.value
                        ).observe(time.perf_counter() - begin)
                nxt.merge(result)
            out = nxt
            _void_wire_notes(
                out, index + 1 < len(self.stages) and self.stages[index + 1].capabilities.reads_wire_note
            )
            if capabilities.releases_in_background:
                urgent = False
        return out

    def _deliver(self, out: Output, urgent: bool) -> None:
        """Queue ``out`` on every exporter. ``urgent``: a client waits, so a failure to make it
        durable (StorageUnavailable) goes back to it; a background release waits for space."""
        for batch in out.batches:
            batch.notes.pop(WIRE_NOTE, None)  # not for the exporters (they have SERIALIZED_NOTE)
            if not item_count(batch):
                continue
            for exporter_id, exporter in self.exporters:
                self._enqueue(exporter_id, exporter, batch, urgent)
        for reason, n in out.dropped.items():
            self.telemetry.record_dropped(self.signal.value, reason, n)
        for callback in out.on_persisted:
            callback()

    def _enqueue(self, exporter_id: str, exporter: QueuedExporter, batch: Batch, urgent: bool) -> None:
        deadline = time.monotonic() + ENQUEUE_WAIT_SECONDS
        while True:
            try:
                exporter.enqueue(batch)
                return
            except StorageUnavailable:
                # The dead-letter store is on the same disk: waiting for space is all there is.
                if urgent or self.stopping.is_set():
                    raise
                self.stopping.wait(0.5)
                continue
            except Backpressure:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        self.dlq.put(
            self.signal,
            batch.request,
            reason="queue_full",
            detail=f"exporter {exporter_id} queue stayed full after processing",
            source=f"exporter:{exporter_id}",
        )


def _void_wire_notes(out: Output, next_reads: bool) -> None:
    """Bytes a stage left on its batches (fresh ones it made, or the ones it was handed and did
    not read, possibly stale if it changed the request) reach only a next stage that reads them
    at once; any other stage could change the request while they stay on the batch."""
    if not next_reads:
        for batch in out.batches:
            batch.notes.pop(WIRE_NOTE, None)


def _wire(batch: Batch, keep: bool = False) -> ExportRequest | bytes:
    """The batch's request as it is now: the bytes a processor left, else a copy. The bytes are
    popped (void once the request changes) unless ``keep``: the next processor reads, then pops,
    them."""
    data = batch.notes.get(WIRE_NOTE) if keep else batch.notes.pop(WIRE_NOTE, None)
    return data if isinstance(data, bytes) else copy_request(batch.request)


class _StageFailed(Exception):
    def __init__(self, component_id: str, error_type: str) -> None:
        super().__init__(component_id)
        self.component_id = component_id
        self.error_type = error_type


def poll_all(pipelines: Sequence[Pipeline], now: float, flush: bool = False) -> None:
    """Collect items held by processors (``poll`` or, at shutdown, ``flush``) and send them on."""
    seen: set[int] = set()
    for pipeline in pipelines:
        for index, stage in enumerate(pipeline.stages):
            key = id(stage.processor)
            if key in seen:
                continue
            seen.add(key)
            call: Callable[[], Output] = (
                stage.processor.flush if flush else (lambda p=stage.processor: p.poll(now))  # type: ignore[misc]
            )
            try:
                with pipeline.lock:
                    out = call()
            except Exception as e:
                log.error(
                    "processor poll failed",
                    extra={"processor": stage.component_id, "error_type": type(e).__name__},
                )
                continue
            if not out.batches and not out.dropped and not out.on_persisted:
                continue
            # A shared processor releases batches of several signals: route each to its pipeline.
            by_signal: dict[Signal, Output] = {}
            for batch in out.batches:
                by_signal.setdefault(batch.signal, Output()).batches.append(batch)
            by_signal.setdefault(pipeline.signal, Output()).dropped.update(out.dropped)
            delivered = True
            for signal, part in by_signal.items():
                target = _pipeline_for(pipelines, stage.processor, signal) or pipeline
                target_index = target.index_of(stage.processor)
                delivered &= target.release(index if target_index is None else target_index, part)
            # Only once every part is queued may the processor forget its durable copies.
            if delivered:
                for callback in out.on_persisted:
                    callback()


def _pipeline_for(pipelines: Sequence[Pipeline], processor: Processor, signal: Signal) -> Pipeline | None:
    for p in pipelines:
        if p.signal is signal and p.index_of(processor) is not None:
            return p
    return None
