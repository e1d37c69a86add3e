"""Trace assembly: hold spans per trace so whole traces reach ``classify`` and ``sample`` together.

Spans of one trace arrive in pieces, from many services, out of order. Cascade analysis and
tail sampling both need the whole trace, so a traces pipeline containing either gets ONE
assembler in front of the first of them (configured from the ``sample`` processor's settings).

- A trace is held for ``decision_wait`` counted from the arrival of its first span (wall clock:
  ``batch.received_at`` and the ``now`` given to ``poll``). Every trace whose wait is over leaves
  in one batch per poll, with ``batch.notes["complete_traces"] = True``.
- Memory is bounded: ``num_traces`` held traces, ``max_spans_per_trace``/``max_bytes_per_trace``
  per trace, ``max_total_mib`` over all. Past a bound the offending (giant) or oldest trace is
  released early — never dropped — so one giant trace cannot starve the others.
- Spans arriving after their trace was released pass straight through with
  ``batch.notes["late"] = True`` (a bounded LRU of released trace ids remembers them).
- Held spans were acknowledged to the sender, so each held fragment (the spans of one trace
  from one batch, as a serialized ExportTraceServiceRequest) is written to a ``HoldStore``
  before ``process`` returns (all fragments of a batch in one ``put_many``); released fragments
  are deleted once the pipeline reports the released batch durably queued
  (``Output.on_persisted``). A restart reloads what was held.

Cost (it runs under the pipeline lock): fragments are kept as serialized spans grouped by the
serialized resource and scope they came with (``assembly_wire``), so holding a span is one C-level
serialization and releasing traces is byte joins plus one parse per released batch — no per-span
message copies either way. A poll releases whole traces in batches of at most ``_CHUNK_SPANS``
spans, so the stages after the assembler take the lock for bounded slices and intake interleaves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, Gauge
from pydantic import Field

from errorgate import assembly_wire as wire
from errorgate.component import ComponentConfig, ComponentContext, Output, Processor
from errorgate.config import Duration
from errorgate.signals import Batch, Signal

if TYPE_CHECKING:
    from collections.abc import Callable

_MIB = 1024 * 1024
_NO_TRACE = bytes(16)
_CHUNK_SPANS = 2048


class AssemblyConfig(ComponentConfig):
    """The assembler's settings; ``sample``'s config extends this model (same keys)."""

    decision_wait: Duration = 10.0
    num_traces: int = Field(default=50_000, ge=1)
    max_spans_per_trace: int = Field(default=10_000, ge=1)
    max_bytes_per_trace: int = Field(default=4 * _MIB, ge=1024)
    max_total_mib: float = Field(default=256, gt=0)
    late_cache_size: int = Field(default=100_000, ge=1)


class HoldStoreLike(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def delete(self, keys: Iterable[str]) -> None: ...
    def items(self) -> Iterator[tuple[str, bytes]]: ...
    def close(self) -> None: ...


def get_or_create(registry: CollectorRegistry, name: str, create: Callable[[], Any]) -> Any:
    """A metric several component instances share on one gateway registry (created once)."""
    names = getattr(registry, "_names_to_collectors", {})
    existing = names.get(name)
    return existing if existing is not None else create()


def valid_trace_id(trace_id: bytes) -> bool:
    return len(trace_id) == 16 and trace_id != bytes(16)


class _Held:
    __slots__ = ("first_seen", "fragments", "nbytes", "spans", "tenant")

    def __init__(self, first_seen: float, tenant: str) -> None:
        self.first_seen = first_seen
        self.tenant = tenant
        self.fragments: list[tuple[str, tuple[wire.Group, ...]]] = []  # (store key, span groups)
        self.spans = 0
        self.nbytes = 0


class TraceAssembler(Processor):
    signals = frozenset({Signal.TRACES})

    def __init__(
        self, config: AssemblyConfig, context: ComponentContext, store: HoldStoreLike | None = None
    ) -> None:
        self.config = config
        self.context = context
        self.store = store
        self._traces: OrderedDict[bytes, _Held] = OrderedDict()  # insertion order = first arrival
        self._released: OrderedDict[bytes, None] = OrderedDict()
        self._total_bytes = 0
        self._seq = 0
        self._max_total = int(config.max_total_mib * _MIB)
        registry = context.telemetry.registry
        self._gauge: Gauge = get_or_create(
            registry,
            "errorgate_assembly_traces",
            lambda: Gauge(
                "errorgate_assembly_traces", "Traces held by the trace assembler", registry=registry
            ),
        )
        if store is not None:
            self._reload(store)

    @classmethod
    def from_sample_config(cls, config: AssemblyConfig | None, context: ComponentContext) -> TraceAssembler:
        """The assembler the pipeline puts before ``classify``/``sample`` (``config``: sample's, or None)."""
        settings = AssemblyConfig()
        if config is not None:
            settings = AssemblyConfig(**{k: getattr(config, k) for k in AssemblyConfig.model_fields})
        return cls(settings, context, _open_store(context))

    # ------------------------------------------------------------------ pipeline interface

    def process(self, batch: Batch) -> Output:
        if batch.signal is not Signal.TRACES or batch.notes.get("complete_traces") or batch.notes.get("late"):
            return Output.of(batch)
        request = cast(ExportTraceServiceRequest, batch.request)
        # trace id -> {(resource head, scope head): serialized ``spans`` fields}
        held: dict[bytes, dict[tuple[bytes, bytes], list[bytes]]] = {}
        late = wire.RequestBuilder()
        untraced = wire.RequestBuilder()
        released = self._released
        small = wire._SMALL
        for i, rs in enumerate(request.resource_spans):
            rhead = None
            for j, ss in enumerate(rs.scope_spans):
                heads = None
                for span in ss.spans:
                    tid = span.trace_id
                    if len(tid) != 16 or tid == _NO_TRACE:
                        untraced.add(i, rs, j, ss, (span,))
                    elif tid in released:
                        late.add(i, rs, j, ss, (span,))
                    else:
                        if heads is None:
                            if rhead is None:
                                rhead = wire.head(rs.resource, rs.schema_url)
                            heads = (rhead, wire.head(ss.scope, ss.schema_url))
                        data = span.SerializeToString()
                        n = len(data)
                        piece = wire.FIELD_2 + (small[n] if n < 4096 else wire.varint(n)) + data
                        groups = held.get(tid)
                        if groups is None:
                            held[tid] = {heads: [piece]}
                        else:
                            pieces = groups.get(heads)
                            if pieces is None:
                                groups[heads] = [piece]
                            else:
                                pieces.append(piece)
        out = Output()
        if untraced.count:
            out.batches.append(self._batch(batch, untraced.request, {}))
        if late.count:
            out.batches.append(self._batch(batch, late.request, {"late": True}))
        oversized: list[bytes] = []
        puts: list[tuple[str, bytes]] = []
        suffix = _key_suffix(batch.received_at, batch.tenant)
        traces = self._traces
        max_spans, max_bytes = self.config.max_spans_per_trace, self.config.max_bytes_per_trace
        seq = self._seq
        added = 0
        for tid, by_heads in held.items():
            if len(by_heads) == 1:  # the common case: one resource and scope
                ((rh, sh), pieces) = next(iter(by_heads.items()))
                spans = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                fragment: tuple[wire.Group, ...] = ((rh, sh, spans, len(pieces)),)
            else:
                fragment = tuple((rh, sh, b"".join(p), len(p)) for (rh, sh), p in by_heads.items())
            data = wire.encode_groups(fragment)
            h = traces.get(tid)
            if h is None:
                h = traces[tid] = _Held(batch.received_at, batch.tenant)
            seq += 1
            key = f"{tid.hex()}.{seq:x}{suffix}"
            puts.append((key, data))
            h.fragments.append((key, fragment))
            h.spans += sum(g[3] for g in fragment) if len(fragment) > 1 else fragment[0][3]
            h.nbytes += len(data)
            added += len(data)
            if h.spans >= max_spans or h.nbytes >= max_bytes:
                oversized.append(tid)
        self._seq = seq
        self._total_bytes += added
        if puts:
            self._persist(puts)
        release = list(dict.fromkeys(oversized))
        release_set = set(release)
        # Oldest first until the bounds hold again; released early, never dropped.
        total = self._total_bytes - sum(self._traces[t].nbytes for t in release)
        count = len(self._traces) - len(release)
        for tid, h in self._traces.items():
            if count <= self.config.num_traces and total <= self._max_total:
                break
            if tid not in release_set:
                release.append(tid)
                count -= 1
                total -= h.nbytes
        if release:
            out.merge(self._release(release, now=batch.received_at, notes={"early": True}))
        self._gauge.set(len(self._traces))
        return out

    def poll(self, now: float) -> Output:
        wait = self.config.decision_wait
        due: list[bytes] = []
        for tid, h in self._traces.items():
            if h.first_seen + wait > now:
                break  # later traces arrived later
            due.append(tid)
        if not due:
            return Output()
        out = self._release(due, now=now, notes={})
        self._gauge.set(len(self._traces))
        return out

    def flush(self) -> Output:
        out = self._release(list(self._traces), now=None, notes={})
        self._gauge.set(0)
        return out

    def shutdown(self) -> None:
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ introspection (tests, readiness)

    @property
    def held_traces(self) -> int:
        return len(self._traces)

    @property
    def held_bytes(self) -> int:
        return self._total_bytes

    @property
    def held_spans(self) -> int:
        return sum(h.spans for h in self._traces.values())

    # ------------------------------------------------------------------ internals

    def _persist(self, puts: list[tuple[str, bytes]]) -> None:
        """Write this batch's fragments durably before ``process`` returns (the sender gets its ack after)."""
        if self.store is None:
            return
        put_many = getattr(self.store, "put_many", None)
        if put_many is not None:  # one write for the whole batch when the store offers it
            put_many(puts)
            return
        for key, data in puts:
            self.store.put(key, data)

    def _add(self, h: _Held, key: str, fragment: tuple[wire.Group, ...], spans: int, nbytes: int) -> None:
        h.fragments.append((key, fragment))
        h.spans += spans
        h.nbytes += nbytes
        self._total_bytes += nbytes

    def _release(self, tids: list[bytes], now: float | None, notes: dict[str, object]) -> Output:
        # Per tenant, chunks of whole traces of at most _CHUNK_SPANS spans (one trace may exceed it):
        # the stages after the assembler hold the pipeline lock per batch, so intake can interleave.
        chunks: dict[str, list[wire.Chunk]] = {}
        keys: list[str] = []
        for tid in tids:
            h = self._traces.pop(tid)
            self._total_bytes -= h.nbytes
            tenant_chunks = chunks.setdefault(h.tenant, [])
            if not tenant_chunks or tenant_chunks[-1].spans + h.spans > _CHUNK_SPANS:
                tenant_chunks.append(wire.Chunk(h.first_seen))
            chunk = tenant_chunks[-1]
            chunk.spans += h.spans
            chunk.first_seen = min(chunk.first_seen, h.first_seen)
            tree = chunk.tree
            for key, fragment in h.fragments:
                for rhead, shead, spans, _ in fragment:
                    scopes = tree.get(rhead)
                    if scopes is None:
                        scopes = tree[rhead] = {}
                    found = scopes.get(shead)
                    if found is None:
                        scopes[shead] = [spans]
                    else:
                        found.append(spans)
                keys.append(key)
            self._remember_released(tid)
        out = Output()
        for tenant, tenant_chunks in chunks.items():
            for chunk in tenant_chunks:
                request = ExportTraceServiceRequest.FromString(wire.encode_tree(chunk.tree))
                received = chunk.first_seen if now is None else now
                batch = Batch(
                    Signal.TRACES, request, received_at=received, receiver="assembly", tenant=tenant
                )
                batch.notes.update({"complete_traces": True, **notes})
                out.batches.append(batch)
        if self.store is not None and keys:
            store = self.store
            out.on_persisted.append(lambda: store.delete(keys))
        return out

    def _remember_released(self, tid: bytes) -> None:
        released = self._released
        if tid in released:
            released.move_to_end(tid)
            return
        released[tid] = None
        if len(released) > self.config.late_cache_size:
            released.popitem(last=False)

    def _reload(self, store: HoldStoreLike) -> None:
        loaded: list[tuple[float, int, bytes, str, str, bytes]] = []
        for key, data in store.items():
            parsed = _parse_key(key)
            if parsed is None:
                continue  # not ours; leave it alone
            tid, seq, first_seen, tenant = parsed
            loaded.append((first_seen, seq, tid, tenant, key, data))
        for first_seen, seq, tid, tenant, key, data in sorted(loaded, key=lambda x: (x[0], x[1])):
            h = self._traces.get(tid)
            if h is None:
                h = self._traces[tid] = _Held(first_seen, tenant)
            groups, spans = wire.decode_groups(data)
            self._add(h, key, tuple(groups), spans, len(data))
            self._seq = max(self._seq, seq)
        if loaded:
            self.context.logger.info("trace assembler reloaded %d held traces", len(self._traces))
        self._gauge.set(len(self._traces))

    @staticmethod
    def _batch(source: Batch, request: ExportTraceServiceRequest, notes: dict[str, object]) -> Batch:
        batch = Batch(
            Signal.TRACES,
            request,
            received_at=source.received_at,
            receiver=source.receiver,
            tenant=source.tenant,
        )
        batch.notes.update(source.notes)
        batch.notes.update(notes)
        return batch


def _key_suffix(first_seen: float, tenant: str) -> str:
    """The part of a fragment's store key after ``<trace id hex>.<seq hex>``.

    The arrival time rides in the key so a restart knows how long the fragment has waited.
    The tenant is hex-encoded so no tenant name can break the key format."""
    return f".{int(first_seen * 1000):x}.{tenant.encode().hex()}"


def _parse_key(key: str) -> tuple[bytes, int, float, str] | None:
    parts = key.split(".", 3)
    if len(parts) != 4:
        return None
    try:
        return (
            bytes.fromhex(parts[0]),
            int(parts[1], 16),
            int(parts[2], 16) / 1000.0,
            bytes.fromhex(parts[3]).decode(),
        )
    except ValueError:
        return None


def _open_store(context: ComponentContext) -> HoldStoreLike | None:
    try:
        from errorgate.holdstore import HoldStore  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        context.logger.warning(
            "errorgate.holdstore is unavailable: held spans are not persisted across restarts"
        )
        return None
    directory: Path = context.state_dir() / "assembly"
    directory.mkdir(parents=True, exist_ok=True)
    return cast(HoldStoreLike, HoldStore(directory, cast(Any, context.service("codec"))))
