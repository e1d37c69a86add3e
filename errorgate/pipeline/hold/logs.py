"""Log records wait for their trace: held until the trace assembler has released it.

``sample`` decides a trace when the assembler releases it, ``decision_wait`` after its first
span; ``classify`` learns a trace's cascade (origin, failing services) at the same moment. Log
records are exported by the same services at about the same time as their spans, usually
before that moment, so without waiting an INFO record of a failing trace would be sampled like
a healthy trace's (and mostly dropped), and an ERROR record would miss its cascade role.

A logs pipeline holding ``classify`` or ``sample`` therefore gets this stage in front of the
first of them, when a traces pipeline has an assembler (``sample.hold_logs``, on by default):

- A request none of whose records carries a trace id passes straight on, as before.
- So does one whose traces were all released already (their decisions are made).
- Any other request is held whole — written durably first, like held spans, since the sender
  gets its acknowledgement — until ``decision_wait`` has passed since its arrival (a trace may
  arrive after its logs) and none of its traces is still held by an assembler; at most twice
  ``decision_wait``. So its records meet their trace's decision in ``sample``'s cache and
  their failing spans in ``classify``'s.
- Released requests leave per tenant as one batch per poll (serialized export requests of
  one signal concatenate into one request), after the traces released before them.
- Memory is bounded by the assembler's ``max_total_mib``: past it the oldest requests are
  released early, never dropped (they are then decided as if their trace were unknown).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client import Gauge

from errorgate.component import Capabilities, ComponentContext, Output, Processor
from errorgate.config import AssemblyConfig
from errorgate.pipeline.assembly.assembler import get_or_create
from errorgate.pipeline.hold.records import HoldStoreLike, Record, Records
from errorgate.signals import WIRE_NOTE, Batch, Signal, WireBatch

_MIB = 1024 * 1024
_NO_TRACE = bytes(16)


class _Held:
    __slots__ = ("data", "first_seen", "record", "tenant", "trace_ids")

    def __init__(
        self, data: bytes, trace_ids: frozenset[bytes], first_seen: float, tenant: str, record: Record
    ) -> None:
        self.data = data
        self.trace_ids = trace_ids
        self.first_seen = first_seen
        self.tenant = tenant
        self.record = record


def trace_ids(request: ExportLogsServiceRequest) -> frozenset[bytes]:
    """The valid trace ids the request's log records carry."""
    found = {
        record.trace_id
        for rl in request.resource_logs
        for sl in rl.scope_logs
        for record in sl.log_records
        if record.trace_id
    }
    found.discard(_NO_TRACE)
    return frozenset(t for t in found if len(t) == 16)


class LogHold(Processor):
    signals = frozenset({Signal.LOGS})
    capabilities = Capabilities(reads_wire_note=True)
    # Not ``releases_in_background``: what passes straight on is intake a client waits for
    # (urgent in the processor worker); what ``poll`` releases is background work anyway, and
    # queues behind the trace releases that went before it.

    def __init__(
        self,
        config: AssemblyConfig,
        context: ComponentContext,
        trace_held: Callable[[bytes], bool],
        store: HoldStoreLike | None = None,
        trace_released: Callable[[bytes], bool] | None = None,
    ) -> None:
        """``trace_held``: whether an assembler holds the trace; ``trace_released``: whether an
        assembler released it already (its decision is made: records of it need not wait)."""
        self.wait = config.decision_wait
        self.max_bytes = int(config.max_total_mib * _MIB)
        self.context = context
        self.store = store
        self._trace_held = trace_held
        self._trace_released = trace_released or (lambda trace_id: False)
        self._records = Records(store)
        self._held: list[_Held] = []  # by arrival
        self._bytes = 0
        registry = context.telemetry.registry
        self._gauge: Gauge = get_or_create(
            registry,
            "errorgate_log_hold_requests",
            lambda: Gauge(
                "errorgate_log_hold_requests",
                "Log export requests held until their traces are decided",
                registry=registry,
            ),
        )
        if store is not None:
            self._reload()

    # ------------------------------------------------------------------ pipeline interface

    def process(self, batch: Batch) -> Output:
        data = batch.notes.pop(WIRE_NOTE, None)
        ids = trace_ids(batch.request) if batch.signal is Signal.LOGS else frozenset()  # type: ignore[arg-type]
        if not ids or all(map(self._trace_released, ids)):  # nothing to wait for
            if isinstance(data, bytes):
                batch.notes[WIRE_NOTE] = data  # the request is unchanged: the bytes still stand
            return Output.of(batch)
        if not isinstance(data, bytes):
            data = batch.request.SerializeToString()
        record = self._records.new(batch.received_at, batch.tenant)
        record.pending = 1
        self._records.persist(record, data)
        self._held.append(_Held(data, ids, batch.received_at, batch.tenant, record))
        self._bytes += len(data)
        out = Output()
        if self._bytes > self.max_bytes:
            early: list[_Held] = []
            while self._held and self._bytes > self.max_bytes:
                held = self._held.pop(0)
                self._bytes -= len(held.data)
                early.append(held)
            out = self._release(early, now=batch.received_at, notes={"early": True})
        self._gauge.set(len(self._held))
        return out

    def poll(self, now: float) -> Output:
        due: list[_Held] = []
        waiting: list[_Held] = []
        for index, held in enumerate(self._held):
            if held.first_seen + self.wait > now:
                # Later requests arrived later: none of them is due either. (Each poll looks
                # only at requests past their wait, so its cost does not grow with the backlog.)
                waiting.extend(self._held[index:])
                break
            if held.first_seen + 2 * self.wait > now and any(map(self._trace_held, held.trace_ids)):
                waiting.append(held)
            else:
                due.append(held)
        if not due:
            return Output()
        self._held = waiting
        self._bytes -= sum(len(h.data) for h in due)
        self._gauge.set(len(waiting))
        return self._release(due, now=now, notes={})

    def flush(self) -> Output:
        held, self._held, self._bytes = self._held, [], 0
        self._gauge.set(0)
        return self._release(held, now=None, notes={})

    def shutdown(self) -> None:
        if self.store is not None:
            self.store.close()

    @property
    def held_requests(self) -> int:
        return len(self._held)

    # ------------------------------------------------------------------ internals

    def _release(self, held: list[_Held], now: float | None, notes: dict[str, object]) -> Output:
        by_tenant: dict[str, list[_Held]] = {}
        for h in held:
            by_tenant.setdefault(h.tenant, []).append(h)
        out = Output()
        for tenant, group in by_tenant.items():
            data = b"".join(h.data for h in group)  # one request: resource_logs entries one after another
            batch = WireBatch(
                Signal.LOGS,
                data,
                received_at=min(h.first_seen for h in group) if now is None else now,
                receiver="log-hold",
                tenant=tenant,
            )
            batch.notes.update({**notes, WIRE_NOTE: data})
            out.batches.append(batch)
        if self.store is not None and held:
            out.on_persisted.append(partial(self._records.settle, {h.record: [b""] for h in held}))
        return out

    def _reload(self) -> None:
        for record, data, _ in self._records.reload():
            try:
                ids = trace_ids(ExportLogsServiceRequest.FromString(data))
            except DecodeError:
                # Left on disk (pending), not dropped: a later version or an operator may read it.
                record.pending = 1
                self.context.logger.warning("log hold: a held record is unreadable; left in place")
                continue
            record.pending = 1
            self._held.append(_Held(data, ids, record.first_seen, record.tenant, record))
            self._bytes += len(data)
        self._records.forget_empty()
        if self._held:
            self.context.logger.info("log hold reloaded %d held requests", len(self._held))
        self._gauge.set(len(self._held))
