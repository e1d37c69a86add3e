"""Trace assembler: whole traces out, late spans marked, bounded memory, durable holds."""

from __future__ import annotations

import gc
import logging
import tracemalloc
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import generate_latest

from errorgate.component import ComponentContext, Output
from errorgate.pipeline.assembly.assembler import AssemblyConfig, TraceAssembler
from errorgate.pipeline.hold.store import HoldStore
from errorgate.signals import Batch, Signal, iter_spans
from errorgate.telemetry import Telemetry

T0 = 1_700_000_000.0


def ctx(tmp_path: Path, telemetry: Telemetry | None = None) -> ComponentContext:
    return ComponentContext(
        component_id="sample",
        data_dir=tmp_path,
        telemetry=telemetry or Telemetry(),
        logger=logging.getLogger("t"),
    )


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def span(trace: int, sid: int, parent: int = 0, name: str = "op") -> Span:
    s = Span(trace_id=tid(trace), span_id=sid.to_bytes(8, "big"), name=name)
    if parent:
        s.parent_span_id = parent.to_bytes(8, "big")
    s.start_time_unix_nano = int(T0 * 1e9) + sid
    s.end_time_unix_nano = int(T0 * 1e9) + sid + 1000
    return s


def request(service: str, *spans: Span, scope: str = "lib") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    ss.spans.extend(spans)
    return req


def batch(req: ExportTraceServiceRequest, at: float, **notes: object) -> Batch:
    b = Batch(Signal.TRACES, req, received_at=at)
    b.notes.update(notes)
    return b


def spans_by_service(out: Output) -> dict[str, set[int]]:
    result: dict[str, set[int]] = {}
    for b in out.batches:
        for rs, _ss, s in iter_spans(b.request):  # type: ignore[arg-type]
            service = rs.resource.attributes[0].value.string_value
            result.setdefault(service, set()).add(int.from_bytes(s.span_id, "big"))
    return result


def test_whole_trace_released_together_after_wait_from_first_span(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(decision_wait=10), ctx(tmp_path))
    # Out of order: the deepest child first, the root last, from three services.
    assert asm.process(batch(request("db-proxy", span(1, 3, parent=2)), T0)).batches == []
    assert asm.process(batch(request("checkout", span(1, 2, parent=1)), T0 + 4)).batches == []
    assert asm.process(batch(request("frontend", span(1, 1)), T0 + 9)).batches == []
    assert asm.poll(T0 + 9.9).batches == []
    out = asm.poll(T0 + 10)
    assert len(out.batches) == 1
    released = out.batches[0]
    assert released.notes["complete_traces"] is True
    assert spans_by_service(out) == {"db-proxy": {3}, "checkout": {2}, "frontend": {1}}
    assert all(ss.scope.name == "lib" for rs in released.request.resource_spans for ss in rs.scope_spans)  # type: ignore[union-attr]
    assert asm.held_traces == 0


def test_traces_released_by_their_own_first_arrival(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(decision_wait=10), ctx(tmp_path))
    asm.process(batch(request("a", span(1, 1), span(2, 2)), T0))
    asm.process(batch(request("a", span(3, 3)), T0 + 5))
    asm.process(batch(request("b", span(1, 4)), T0 + 6))  # joins trace 1, does not extend its wait
    out = asm.poll(T0 + 10)
    assert len(out.batches) == 1
    assert spans_by_service(out) == {"a": {1, 2}, "b": {4}}
    assert asm.held_traces == 1
    assert spans_by_service(asm.poll(T0 + 15)) == {"a": {3}}


def test_late_span_passes_through_marked_late(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(decision_wait=1), ctx(tmp_path))
    asm.process(batch(request("a", span(1, 1)), T0))
    asm.poll(T0 + 1)
    out = asm.process(batch(request("b", span(1, 2), span(9, 9)), T0 + 2))
    assert len(out.batches) == 1
    late = out.batches[0]
    assert late.notes == {"late": True}
    assert spans_by_service(out) == {"b": {2}}
    assert asm.held_traces == 1  # trace 9 is new and held


def test_resource_and_scope_grouping_survive_regrouping(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(decision_wait=1), ctx(tmp_path))
    req = request("a", span(1, 1), scope="http")
    extra = req.resource_spans[0].scope_spans.add()
    extra.scope.name = "db"
    extra.spans.append(span(1, 2))
    asm.process(batch(req, T0))
    asm.process(batch(request("a", span(1, 3), scope="db"), T0 + 0.5))
    out = asm.poll(T0 + 1)
    (rs,) = out.batches[0].request.resource_spans  # type: ignore[union-attr]
    grouped = {
        ss.scope.name: sorted(int.from_bytes(s.span_id, "big") for s in ss.spans) for ss in rs.scope_spans
    }
    assert grouped == {"http": [1], "db": [2, 3]}


def test_giant_trace_released_early_without_starving_others(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(decision_wait=10, max_spans_per_trace=5), ctx(tmp_path))
    asm.process(batch(request("small", span(2, 100)), T0))
    out = asm.process(batch(request("big", *[span(1, i) for i in range(1, 8)]), T0))
    assert len(out.batches) == 1
    assert out.batches[0].notes["complete_traces"] is True and out.batches[0].notes["early"] is True
    assert spans_by_service(out) == {"big": set(range(1, 8))}  # released whole, nothing dropped
    assert asm.held_traces == 1
    # more spans of the giant trace now pass through as late
    late = asm.process(batch(request("big", span(1, 50)), T0 + 1))
    assert late.batches[0].notes["late"] is True


def test_num_traces_bound_releases_oldest_early(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(decision_wait=10, num_traces=3), ctx(tmp_path))
    released: set[int] = set()
    for i in range(1, 6):
        out = asm.process(batch(request("a", span(i, i)), T0 + i))
        released |= spans_by_service(out).get("a", set())
    assert asm.held_traces == 3
    assert released == {1, 2}
    assert spans_by_service(asm.flush()) == {"a": {3, 4, 5}}


def test_byte_bound_releases_oldest_early(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(decision_wait=10, max_total_mib=0.001), ctx(tmp_path))  # ~1 KiB
    total = 0
    released = 0
    for i in range(1, 40):
        out = asm.process(batch(request("a", span(i, i, name="x" * 50)), T0))
        released += sum(b.item_count() for b in out.batches)
        total += 1
        assert asm.held_bytes <= 1048
    assert released + asm.held_spans == total


def test_non_trace_batches_pass_untouched(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(), ctx(tmp_path))
    logs = Batch(Signal.LOGS, ExportLogsServiceRequest())
    logs.request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hi"  # type: ignore[union-attr]
    assert asm.process(logs).batches == [logs]
    assembled = batch(request("a", span(1, 1)), T0, complete_traces=True)
    assert asm.process(assembled).batches == [assembled]


def test_invalid_trace_ids_are_not_held(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(), ctx(tmp_path))
    bad = span(0, 1)
    out = asm.process(batch(request("a", bad), T0))
    assert spans_by_service(out) == {"a": {1}}
    assert asm.held_traces == 0


def test_gauge_counts_held_traces(tmp_path: Path) -> None:
    telemetry = Telemetry()
    asm = TraceAssembler(AssemblyConfig(decision_wait=5), ctx(tmp_path, telemetry))
    asm.process(batch(request("a", span(1, 1), span(2, 2)), T0))
    assert "errorgate_assembly_traces 2.0" in generate_latest(telemetry.registry).decode()
    asm.poll(T0 + 5)
    assert "errorgate_assembly_traces 0.0" in generate_latest(telemetry.registry).decode()


def test_held_spans_survive_a_crash_and_are_deleted_once_persisted(tmp_path: Path) -> None:
    context = ctx(tmp_path)
    asm = TraceAssembler.from_sample_config(AssemblyConfig(decision_wait=10), context)
    asm.process(batch(request("checkout", span(1, 2, parent=1)), T0))
    asm.process(batch(request("frontend", span(1, 1), span(2, 7)), T0 + 3))
    assert asm.held_traces == 2
    del asm  # crash: no flush, no shutdown
    gc.collect()

    revived = TraceAssembler.from_sample_config(AssemblyConfig(decision_wait=10), ctx(tmp_path))
    assert revived.held_traces == 2 and revived.held_spans == 3
    assert revived.poll(T0 + 9).batches == []  # the wait still counts from the original arrival
    out = revived.poll(T0 + 13)
    assert spans_by_service(out) == {"checkout": {2}, "frontend": {1, 7}}
    for callback in out.on_persisted:
        callback()
    revived.shutdown()

    again = TraceAssembler.from_sample_config(AssemblyConfig(decision_wait=10), ctx(tmp_path))
    assert again.held_traces == 0
    again.shutdown()


def test_released_but_unpersisted_spans_come_back_after_crash(tmp_path: Path) -> None:
    store_dir = tmp_path / "holds"
    asm = TraceAssembler(AssemblyConfig(decision_wait=1), ctx(tmp_path), HoldStore(store_dir))
    asm.process(batch(request("a", span(1, 1)), T0))
    out = asm.poll(T0 + 1)
    assert sum(b.item_count() for b in out.batches) == 1
    del asm  # crashed before the exporters confirmed: on_persisted never ran
    gc.collect()
    revived = TraceAssembler(AssemblyConfig(decision_wait=1), ctx(tmp_path), HoldStore(store_dir))
    assert spans_by_service(revived.flush()) == {"a": {1}}


def test_tenants_stay_apart(tmp_path: Path) -> None:
    asm = TraceAssembler(AssemblyConfig(decision_wait=1), ctx(tmp_path), HoldStore(tmp_path / "h"))
    b1 = batch(request("a", span(1, 1)), T0)
    b1.tenant = "acme\nweird"
    asm.process(b1)
    asm.process(batch(request("a", span(2, 2)), T0))
    out = asm.poll(T0 + 1)
    assert sorted(b.tenant for b in out.batches) == ["", "acme\nweird"]


@pytest.mark.slow
def test_memory_bound_with_100k_open_traces(tmp_path: Path) -> None:
    """100k traces held at once, 20k more pushing the oldest out early.

    Bound: the serialized spans held (``held_bytes``, ~120 B per one-span trace here) plus 700 B
    of bookkeeping per trace (dict slot, _Held object, fragment list, key string, bytes header,
    released-id LRU entry) — about 82 MB for 100k traces; anything linear in the spans *seen*
    rather than held, or a leak of the parsed messages, would blow through it.
    """
    config = AssemblyConfig(decision_wait=60, num_traces=100_000, late_cache_size=100_000)
    asm = TraceAssembler(config, ctx(tmp_path))
    total = 120_000
    released = 0
    tracemalloc.start()
    try:
        for start in range(1, total + 1, 1000):
            req = request("svc", *[span(t, t) for t in range(start, start + 1000)])
            out = asm.process(batch(req, T0 + start / 1000))
            released += sum(b.item_count() for b in out.batches)
            del out, req
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert asm.held_traces == 100_000
    assert released == 20_000  # early, not dropped
    assert released + asm.held_spans == total
    bound = asm.held_bytes + 700 * 100_000
    assert peak < bound, f"peak {peak / 1e6:.1f} MB over bound {bound / 1e6:.1f} MB"


def _settle(out: Output) -> None:
    for callback in out.on_persisted:
        callback()


def _store_keys(store_dir: Path) -> list[str]:
    store = HoldStore(store_dir)
    try:
        return sorted(k for k, _ in store.items())
    finally:
        store.close()


def test_partly_released_batch_comes_back_without_its_released_traces(tmp_path: Path) -> None:
    store_dir = tmp_path / "holds"
    asm = TraceAssembler(AssemblyConfig(decision_wait=10), ctx(tmp_path), HoldStore(store_dir))
    asm.process(batch(request("a", span(1, 1)), T0))
    # One batch: more of trace 1 (leaves with trace 1 at T0 + 10) and trace 2 (held until T0 + 15).
    asm.process(batch(request("b", span(1, 2), span(2, 3)), T0 + 5))
    out = asm.poll(T0 + 10)
    assert spans_by_service(out) == {"a": {1}, "b": {2}}
    _settle(out)
    del asm  # crash
    gc.collect()

    revived = TraceAssembler(AssemblyConfig(decision_wait=10), ctx(tmp_path), HoldStore(store_dir))
    assert revived.held_traces == 1 and revived.held_spans == 1
    assert revived.poll(T0 + 14.9).batches == []  # still counted from the batch's arrival
    out = revived.poll(T0 + 15)
    assert spans_by_service(out) == {"b": {3}}
    _settle(out)
    revived.shutdown()
    assert _store_keys(store_dir) == []  # the record and its tombstone are gone


def test_a_record_stays_until_every_release_from_it_is_persisted(tmp_path: Path) -> None:
    store_dir = tmp_path / "holds"
    config = AssemblyConfig(decision_wait=10, max_spans_per_trace=2)
    asm = TraceAssembler(config, ctx(tmp_path), HoldStore(store_dir))
    # Trace 1 is over its bound and leaves at once; trace 2 of the same batch is held.
    early = asm.process(batch(request("a", span(1, 1), span(1, 2), span(2, 3)), T0))
    assert spans_by_service(early) == {"a": {1, 2}}
    later = asm.poll(T0 + 10)
    assert spans_by_service(later) == {"a": {3}}
    _settle(later)  # the later release is queued first; the early one never was (crash)
    del asm
    gc.collect()
    revived = TraceAssembler(config, ctx(tmp_path), HoldStore(store_dir))
    out = revived.flush()
    assert spans_by_service(out) == {"a": {1, 2}}  # not lost, and trace 2 does not come back
    _settle(out)
    revived.shutdown()
    assert _store_keys(store_dir) == []


def test_late_and_untraced_spans_are_not_persisted_with_the_held_ones(tmp_path: Path) -> None:
    store_dir = tmp_path / "holds"
    asm = TraceAssembler(AssemblyConfig(decision_wait=1), ctx(tmp_path), HoldStore(store_dir))
    asm.process(batch(request("a", span(1, 1)), T0))
    _settle(asm.poll(T0 + 1))
    out = asm.process(batch(request("b", span(1, 2), span(0, 3), span(5, 4)), T0 + 2))
    assert sorted(
        (bool(b.notes.get("late")), sorted(spans_by_service(Output(batches=[b]))["b"])) for b in out.batches
    ) == [
        (False, [3]),
        (True, [2]),
    ]
    del asm
    gc.collect()
    revived = TraceAssembler(AssemblyConfig(decision_wait=1), ctx(tmp_path), HoldStore(store_dir))
    assert spans_by_service(revived.flush()) == {"b": {4}}


def test_records_of_the_per_trace_format_are_reloaded(tmp_path: Path) -> None:
    store = HoldStore(tmp_path / "holds")
    fragment = request("a", span(7, 1)).SerializeToString()
    store.put(f"{tid(7).hex()}.1.{int(T0 * 1000):x}.{b'acme'.hex()}", fragment)
    store.close()
    revived = TraceAssembler(AssemblyConfig(decision_wait=10), ctx(tmp_path), HoldStore(tmp_path / "holds"))
    assert revived.poll(T0 + 9).batches == []
    out = revived.poll(T0 + 10)
    assert spans_by_service(out) == {"a": {1}} and out.batches[0].tenant == "acme"


def test_the_pipeline_hands_its_bytes_to_the_assembler(tmp_path: Path) -> None:
    from errorgate.signals import WIRE_NOTE

    asm = TraceAssembler(AssemblyConfig(decision_wait=1), ctx(tmp_path))
    req = request("a", span(1, 1))
    b = batch(req, T0)
    b.notes[WIRE_NOTE] = request("a", span(1, 1), span(1, 2)).SerializeToString()
    assert asm.process(b).batches == [] and WIRE_NOTE not in b.notes
    out = asm.poll(T0 + 1)
    assert spans_by_service(out) == {"a": {1, 2}}  # the bytes, not the request, were held
    assert isinstance(out.batches[0].notes[WIRE_NOTE], bytes)


def test_a_trace_id_held_anew_waits_from_its_new_arrival(tmp_path: Path) -> None:
    config = AssemblyConfig(decision_wait=10, max_spans_per_trace=2, late_cache_size=1)
    asm = TraceAssembler(config, ctx(tmp_path))
    assert spans_by_service(asm.process(batch(request("a", span(1, 1), span(1, 2)), T0))) == {"a": {1, 2}}
    # Trace 2 leaves early too and pushes trace 1 out of the (one-entry) late cache...
    assert spans_by_service(asm.process(batch(request("a", span(2, 3), span(2, 4)), T0 + 1))) == {"a": {3, 4}}
    # ...so a new span of trace 1 is held anew, counted from its own arrival.
    assert asm.process(batch(request("b", span(1, 5)), T0 + 5)).batches == []
    assert asm.poll(T0 + 10).batches == []
    assert spans_by_service(asm.poll(T0 + 15)) == {"b": {5}}
