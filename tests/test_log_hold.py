"""Log records wait for their trace: unit behaviour of ``LogHold`` (held durably, released once
the trace is no longer held, bounded, reloaded after a restart)."""

from __future__ import annotations

import logging
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from errorgate.component import ComponentContext, Output
from errorgate.pipeline.assembly.assembler import AssemblyConfig
from errorgate.pipeline.hold.logs import LogHold
from errorgate.pipeline.hold.store import HoldStore
from errorgate.signals import WIRE_NOTE, Batch, Signal
from errorgate.telemetry import Telemetry

T0 = 1_700_000_000.0


def ctx(tmp_path: Path) -> ComponentContext:
    return ComponentContext(
        component_id="log-hold/logs", data_dir=tmp_path, telemetry=Telemetry(), logger=logging.getLogger("t")
    )


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def logs(*records: tuple[bytes, str], service: str = "checkout") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    sl = rl.scope_logs.add()
    for trace_id, body in records:
        sl.log_records.append(LogRecord(trace_id=trace_id, body=AnyValue(string_value=body)))
    return req


def batch(req: ExportLogsServiceRequest, at: float, tenant: str = "") -> Batch:
    return Batch(Signal.LOGS, req, received_at=at, tenant=tenant)


def bodies(out: Output) -> list[str]:
    return [
        r.body.string_value
        for b in out.batches
        for rl in b.request.resource_logs  # type: ignore[union-attr]
        for sl in rl.scope_logs
        for r in sl.log_records
    ]


def test_untraced_requests_pass_straight_on_with_their_bytes(tmp_path: Path) -> None:
    hold = LogHold(AssemblyConfig(decision_wait=10), ctx(tmp_path), lambda t: True)
    req = logs((b"", "no trace"), (bytes(16), "zero trace id"))
    b = batch(req, T0)
    b.notes[WIRE_NOTE] = req.SerializeToString()
    out = hold.process(b)
    assert out.batches == [b]
    assert b.notes[WIRE_NOTE] == req.SerializeToString()  # the next stage may still read them
    assert hold.held_requests == 0


def test_records_of_traces_already_released_pass_straight_on(tmp_path: Path) -> None:
    released = {tid(1), tid(2)}
    hold = LogHold(
        AssemblyConfig(decision_wait=10), ctx(tmp_path), lambda t: False, trace_released=released.__contains__
    )
    late = batch(logs((tid(1), "late"), (tid(2), "late too"), (b"", "untraced")), T0)
    assert hold.process(late).batches == [late]  # their decisions are made: nothing to wait for
    mixed = batch(logs((tid(1), "late"), (tid(3), "not yet seen")), T0)
    assert hold.process(mixed).batches == []
    assert hold.held_requests == 1


def test_traced_records_wait_while_their_trace_is_held(tmp_path: Path) -> None:
    held_traces = {tid(1)}
    hold = LogHold(AssemblyConfig(decision_wait=10), ctx(tmp_path), held_traces.__contains__)
    assert hold.process(batch(logs((tid(1), "charging card")), T0)).batches == []
    assert hold.process(batch(logs((tid(2), "other trace"), (b"", "untraced")), T0 + 1)).batches == []
    assert hold.poll(T0 + 9.9).batches == []  # decision_wait not over for either
    # Trace 2 was never held: its request leaves after decision_wait; trace 1 still held.
    out = hold.poll(T0 + 11)
    assert bodies(out) == ["other trace", "untraced"]
    assert (
        out.batches[0].notes[WIRE_NOTE]
        == logs((tid(2), "other trace"), (b"", "untraced")).SerializeToString()
    )
    held_traces.clear()  # the assembler released trace 1
    assert bodies(hold.poll(T0 + 12)) == ["charging card"]
    assert hold.held_requests == 0


def test_a_trace_held_beyond_twice_decision_wait_no_longer_holds_its_logs(tmp_path: Path) -> None:
    hold = LogHold(AssemblyConfig(decision_wait=10), ctx(tmp_path), lambda t: True)
    hold.process(batch(logs((tid(1), "a")), T0))
    assert hold.poll(T0 + 19.9).batches == []
    assert bodies(hold.poll(T0 + 20)) == ["a"]


def test_requests_released_together_are_one_request_per_tenant(tmp_path: Path) -> None:
    hold = LogHold(AssemblyConfig(decision_wait=1), ctx(tmp_path), lambda t: False)
    hold.process(batch(logs((tid(1), "a1")), T0, tenant="a"))
    hold.process(batch(logs((tid(2), "b1")), T0, tenant="b"))
    hold.process(batch(logs((tid(3), "a2"), service="payments"), T0, tenant="a"))
    out = hold.poll(T0 + 1)
    assert [(b.tenant, bodies(Output(batches=[b]))) for b in out.batches] == [
        ("a", ["a1", "a2"]),
        ("b", ["b1"]),
    ]
    services = [rl.resource.attributes[0].value.string_value for rl in out.batches[0].request.resource_logs]  # type: ignore[union-attr]
    assert services == ["checkout", "payments"]


def test_memory_bound_releases_the_oldest_early_never_drops(tmp_path: Path) -> None:
    hold = LogHold(AssemblyConfig(decision_wait=10, max_total_mib=0.001), ctx(tmp_path), lambda t: True)
    released: list[str] = []
    for i in range(20):
        out = hold.process(batch(logs((tid(i + 1), f"record {i} " + "x" * 100)), T0 + i))
        assert all(b.notes.get("early") is True for b in out.batches)
        released += [body.split(" x")[0] for body in bodies(out)]
    assert released  # the bound (1,048 bytes) forced early releases
    remaining = bodies(hold.flush())
    assert released + [body.split(" x")[0] for body in remaining] == [f"record {i}" for i in range(20)]


def test_held_requests_survive_a_restart_and_are_forgotten_once_queued(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    hold = LogHold(AssemblyConfig(decision_wait=5), ctx(tmp_path), lambda t: True, HoldStore(store_dir))
    hold.process(batch(logs((tid(1), "before the crash")), T0, tenant="acme"))
    hold.process(batch(logs((tid(2), "second")), T0 + 1))
    hold.shutdown()  # a crash: nothing released, nothing flushed

    revived = LogHold(AssemblyConfig(decision_wait=5), ctx(tmp_path), lambda t: False, HoldStore(store_dir))
    assert revived.held_requests == 2
    out = revived.poll(T0 + 5)  # the arrival time survived: the first one is due, the second not yet
    assert [(b.tenant, bodies(Output(batches=[b]))) for b in out.batches] == [("acme", ["before the crash"])]
    for callback in out.on_persisted:
        callback()
    revived.shutdown()

    again = LogHold(AssemblyConfig(decision_wait=5), ctx(tmp_path), lambda t: False, HoldStore(store_dir))
    assert again.held_requests == 1  # the queued one is gone; the other is still held
    assert bodies(again.flush()) == ["second"]
    again.shutdown()
