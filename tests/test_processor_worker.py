"""classify and sample in the processor worker process (``service.processor_worker``), through the
real gateway, real gRPC on loopback and a real OTLP sink: what arrives is what the in-process
pipeline sends; the worker's metrics are served by the gateway; a worker that dies or stops
answering costs the batches it held (dead-lettered, counted) and nothing else."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import generate_latest

from errorgate import attributes
from errorgate.config import ConfigError, parse_config
from errorgate.service.gateway import Gateway
from errorgate.signals import Signal
from tests.support.gateway import (
    gateway_yaml,
    metric_value,
    otlp_exporter_yaml,
    running_gateway,
    scrape,
)
from tests.support.otlp_sink import OtlpSink

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
T0 = 1_700_000_000_000_000_000
PROCESSORS = (
    "{classify: {}, sample: {decision_wait: 200ms, healthy_keep_probability: 0.5},"
    " redact: {workers: 0}, retention: {}}"
)


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _logs(n: int, start: int = 0, service: str = "checkout") -> ExportLogsServiceRequest:
    """``n`` log records; every third is an ERROR with an exception."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", service))
    sl = rl.scope_logs.add()
    for i in range(start, start + n):
        record = sl.log_records.add()
        record.time_unix_nano = T0 + i * 1_000_000
        if i % 3 == 0:
            record.severity_number = 17  # ERROR
            record.body.string_value = f"payment {i} failed for jane.doe{i}@example.com: upstream timeout"
            record.attributes.extend(
                [_kv("exception.type", "TimeoutError"), _kv("exception.message", "upstream timeout")]
            )
        else:
            record.severity_number = 9  # INFO
            record.body.string_value = f"order {i} accepted"
    return req


def _traces(n_traces: int, start: int = 0) -> ExportTraceServiceRequest:
    """Two-span traces (server + client child); every fourth trace's client span fails."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "checkout"))
    ss = rs.scope_spans.add()
    for t in range(start, start + n_traces):
        trace_id = _trace_id(t)
        root = ss.spans.add(
            name="POST /orders", kind=2, trace_id=trace_id, span_id=(2 * t + 1).to_bytes(8, "big")
        )
        root.start_time_unix_nano, root.end_time_unix_nano = T0 + t, T0 + t + 5_000_000
        child = ss.spans.add(name="charge", kind=3, trace_id=trace_id, span_id=(2 * t + 2).to_bytes(8, "big"))
        child.parent_span_id = root.span_id
        child.start_time_unix_nano, child.end_time_unix_nano = T0 + t + 1, T0 + t + 4_000_000
        child.attributes.append(_kv("server.address", "payments.internal"))
        if t % 4 == 0:
            child.status.code = 2
            child.status.message = "connection refused"
            root.status.code = 2
    return req


def _late(n_traces: int) -> ExportTraceServiceRequest:
    """One more span for each trace of ``_traces``, sent after its decision was made."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "audit"))
    ss = rs.scope_spans.add()
    for t in range(n_traces):
        span = ss.spans.add(
            name="late", kind=2, trace_id=_trace_id(t), span_id=(10_000 + t).to_bytes(8, "big")
        )
        span.parent_span_id = (2 * t + 1).to_bytes(8, "big")
        span.start_time_unix_nano, span.end_time_unix_nano = T0 + t + 2, T0 + t + 3_000_000
    return req


def _trace_id(t: int) -> bytes:
    return (0x5EED << 64 | t * 0x9E3779B97F4A7C15 % (1 << 64)).to_bytes(16, "big")


def _config(data: Path, sink: OtlpSink, worker: str = "", processors: str = "") -> str:
    return gateway_yaml(
        data,
        exporter=otlp_exporter_yaml(sink.grpc_endpoint, queue_dir=data / "queue"),
        processors=processors or PROCESSORS,
        pipeline_processors="[classify, sample, redact, retention]",
        metrics_processors="[]",
        service_extra=f"  poll_interval: 50ms\n{worker}",
    )


class _Client:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.logs = self.channel.unary_unary(
            LOGS_EXPORT, request_serializer=bytes, response_deserializer=bytes
        )
        self.traces = self.channel.unary_unary(
            TRACES_EXPORT, request_serializer=bytes, response_deserializer=bytes
        )

    def send_logs(self, req: ExportLogsServiceRequest) -> grpc.StatusCode:
        return self._send(self.logs, req)

    def send_traces(self, req: ExportTraceServiceRequest) -> grpc.StatusCode:
        return self._send(self.traces, req)

    @staticmethod
    def _send(call: Any, req: Any) -> grpc.StatusCode:
        try:
            call(req.SerializeToString(), timeout=30)
        except grpc.RpcError as e:
            return e.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    def close(self) -> None:
        self.channel.close()


def _worker_pid(gw: Gateway) -> int:
    assert gw.worker is not None and gw.worker._current is not None
    return int(gw.worker._current.process.pid)


def _exported(sink: OtlpSink) -> list[tuple[str, str, dict[str, Any]]]:
    """What arrived, order-independent: (kind, name or body, attributes) per item."""
    out = [("span", s.name, attributes.to_dict(s.attributes)) for s in sink.spans()]
    out += [("log", r.body.string_value, attributes.to_dict(r.attributes)) for r in sink.log_records()]
    return sorted(out, key=repr)


def _run_scenario(tmp: Path, worker: str) -> tuple[list[tuple[str, str, dict[str, Any]]], str]:
    with OtlpSink() as sink:
        with running_gateway(_config(tmp, sink, worker)) as gw:
            client = _Client(gw.grpc_endpoint)
            for batch in range(4):
                assert client.send_traces(_traces(20, start=batch * 20)) == grpc.StatusCode.OK
                assert client.send_logs(_logs(30, start=batch * 30)) == grpc.StatusCode.OK
            _wait(
                lambda: (
                    metric_value(
                        scrape(gw.metrics_endpoint), "errorgate_sampled_items_total", signal="traces"
                    )
                    == 160
                )
            )
            # Late spans follow their trace's decision (the assembler marks them, the worker
            # must see the mark).
            assert client.send_traces(_late(80)) == grpc.StatusCode.OK
            client.close()
            in_worker = gw.worker is not None
        metrics = generate_latest(gw.telemetry.registry).decode()
        assert in_worker == (worker == "")
        return _exported(sink), metrics


def test_the_worker_sends_exactly_what_the_in_process_pipeline_sends(tmp_path: Path) -> None:
    isolated, m1 = _run_scenario(tmp_path / "a", "")
    in_process, m2 = _run_scenario(tmp_path / "b", "  processor_worker: {enabled: false}")
    assert isolated == in_process
    # The scenario exercises both processors: errors fingerprinted, healthy traces thinned.
    # redact and retention ran too: no e-mail address left, every item has a retention class.
    assert not [body for _, body, _ in isolated if "@example.com" in body]
    assert len([body for _, body, _ in isolated if "<EMAIL_ADDRESS>" in body]) == 40
    assert all("errorgate.retention.class" in a for _, _, a in isolated)
    fingerprints = [a for kind, _, a in isolated if "errorgate.error.fingerprint" in a]
    assert len(fingerprints) >= 40 + 20  # 40 ERROR logs, every span of the 20 failing traces
    spans = [x for x in isolated if x[0] == "span" and x[1] != "late"]
    late = [x for x in isolated if x[1] == "late"]
    assert 40 < len(spans) < 160
    assert len(late) == len(spans) // 2  # one per kept trace, none for a dropped one
    for m in (m1, m2):
        assert metric_value(m, "errorgate_sampled_items_total", signal="traces") == 240
        kept = metric_value(m, "errorgate_sampled_items_total", signal="traces", decision="kept")
        assert kept == len(spans) + len(late)
    for name in ("errorgate_sampled_items_total", "errorgate_errors_total"):
        assert metric_value(m1, name) == metric_value(m2, name) > 0, name


def test_worker_metrics_are_served_once_by_the_gateway(tmp_path: Path) -> None:
    with OtlpSink() as sink, running_gateway(_config(tmp_path, sink)) as gw:
        assert _worker_pid(gw) != os.getpid()
        client = _Client(gw.grpc_endpoint)
        assert client.send_logs(_logs(9)) == grpc.StatusCode.OK
        client.close()
        text = scrape(gw.metrics_endpoint)
    assert metric_value(text, "errorgate_sampled_items_total", signal="logs") == 9
    assert metric_value(text, "errorgate_errors_total", service="checkout") == 3
    # Each family once: the worker's are not the gateway's (a repeated family breaks scrapes).
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps))
    assert "errorgate_received_items_total" in helps and "errorgate_sampled_items_total" in helps
    # Hosted processors' latency is recorded under their own ids.
    assert (
        metric_value(text, "errorgate_processor_duration_seconds_count", processor="classify", signal="logs")
        == 1
    )
    assert (
        metric_value(text, "errorgate_processor_duration_seconds_count", processor="sample", signal="logs")
        == 1
    )


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _balance(metrics: str, signal: str) -> tuple[float, float, float, float]:
    return (
        metric_value(metrics, "errorgate_received_items_total", signal=signal),
        metric_value(metrics, "errorgate_exported_items_total", signal=signal),
        metric_value(metrics, "errorgate_dropped_items_total", signal=signal),
        metric_value(metrics, "errorgate_dead_lettered_items_total", signal=signal),
    )


@pytest.mark.parametrize("failure", ["killed", "silent"])
def test_a_lost_worker_costs_only_the_batch_it_held(tmp_path: Path, failure: str) -> None:
    """The worker is stopped (SIGSTOP) with a batch sent to it, then killed (or left until
    ``processor_worker.timeout``): that batch is dead-lettered and its client told; the worker
    is restarted and later batches go through; received = exported + dropped + dead-lettered."""
    worker = "  processor_worker: {timeout: 1s}" if failure == "silent" else ""
    with OtlpSink() as sink, running_gateway(_config(tmp_path, sink, worker)) as gw:
        client = _Client(gw.grpc_endpoint)
        assert client.send_logs(_logs(6, start=0)) == grpc.StatusCode.OK
        pid = _worker_pid(gw)
        os.kill(pid, signal.SIGSTOP)
        codes: list[grpc.StatusCode] = []
        sender = threading.Thread(target=lambda: codes.append(client.send_logs(_logs(6, start=100))))
        sender.start()
        assert gw.worker is not None
        _wait(lambda: gw.worker is not None and gw.worker._current is not None and gw.worker._current.pending)
        if failure == "killed":
            os.kill(pid, signal.SIGKILL)
        sender.join(20)
        assert codes == [grpc.StatusCode.INTERNAL]
        assert client.send_logs(_logs(6, start=200)) == grpc.StatusCode.OK
        assert gw.worker.restarts == 1 and _worker_pid(gw) != pid
        client.close()
        dead = [(e.signal, e.items, e.reason) for e in gw.dlq.list()]
    assert dead == [(Signal.LOGS, 6, "processor_error")]
    bodies = sorted(r.body.string_value for r in sink.log_records())
    assert [b for b in bodies if " 10" in b] == []  # nothing of the lost batch arrived
    assert len([b for b in bodies if "20" in b]) == 6  # the batch after the restart did, tagged
    after = [r for r in sink.log_records() if r.body.string_value.startswith("payment 20")]
    assert after and all("errorgate.error.fingerprint" in attributes.to_dict(r.attributes) for r in after)
    metrics = generate_latest(gw.telemetry.registry).decode()
    received, exported, dropped, dead_lettered = _balance(metrics, "logs")
    assert received == 18 and dead_lettered == 6
    assert received == exported + dropped + dead_lettered
    assert metric_value(metrics, "errorgate_processor_failures_total", processor="processor_worker") == 1
    assert metric_value(metrics, "errorgate_processor_worker_restarts_total") == 1


def test_worker_config_errors_name_the_key(tmp_path: Path) -> None:
    with OtlpSink() as sink:
        bad_catalog = _config(
            tmp_path,
            sink,
            processors=PROCESSORS.replace("classify: {}", f"classify: {{catalog: {tmp_path}/no.yaml}}"),
        )
        with pytest.raises(ConfigError, match=r"processors\.classify\.catalog"):
            Gateway(parse_config(bad_catalog, "<test>"))
        bad_timeout = _config(tmp_path, sink, "  processor_worker: {timeout: 0s}")
        with pytest.raises(ConfigError, match=r"processor_worker.*timeout"):
            parse_config(bad_timeout, "<test>")
        unknown = _config(tmp_path, sink, "  processor_worker: {enable: true}")
        with pytest.raises(ConfigError, match=r"processor_worker.*enable"):
            parse_config(unknown, "<test>")


EXIT_WITHOUT_STOP = """
import sys
from pathlib import Path
from errorgate.config import parse_config
from errorgate.service.gateway import Gateway
from tests.support.gateway import gateway_yaml

if __name__ == "__main__":
    config = gateway_yaml(
        Path(sys.argv[1]), exporter="  debug: {}", exporter_id="debug",
        processors="{classify: {}, sample: {}}", pipeline_processors="[classify, sample]",
        metrics_processors="[]",
    )
    gateway = Gateway(parse_config(config, "<test>"))
    gateway.start()
    print(gateway.worker._current.process.pid, flush=True)
"""


def test_a_program_that_never_stops_its_gateway_still_exits(tmp_path: Path) -> None:
    """The worker ignores SIGTERM (the gateway, not a process-group signal, ends it), which is
    all multiprocessing's exit handler sends before it joins: errorgate kills it first."""
    script = tmp_path / "embed.py"
    script.write_text(EXIT_WITHOUT_STOP)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    _wait(
        lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_worker_settings_never_print_key_material(tmp_path: Path) -> None:
    """The worker gets the gateway's environment (a keyring may come from it) and the encrypt
    config: neither may show up where the settings are printed or logged."""
    from errorgate.pipeline.worker.protocol import WorkerSettings

    settings = WorkerSettings(
        data_dir=tmp_path,
        label_caps={},
        log_level="info",
        log_encoding="console",
        components={("encrypt", 0): {"key": "kms-secret-config"}},
        timeout=30.0,
        extensions={"keyring": {"keyring": "kms-secret-config"}},
        environ={"ERRORGATE_KEYRING": "base64-master-key-material"},
    )
    text = repr(settings)
    assert "base64-master-key-material" not in text and "kms-secret-config" not in text
    assert "timeout=30.0" in text


def test_a_full_pipe_both_ways_does_not_deadlock() -> None:
    """Many large batches sent at once (a big release, a flush at shutdown) while the worker
    sends large answers back: with small socket buffers both directions fill up, and only a
    reader that keeps draining answers while a sender is blocked lets both sides go on."""
    from multiprocessing.connection import Connection

    from errorgate.pipeline.worker.client import _Process

    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    ours, theirs = Connection(a.detach()), Connection(b.detach())

    def echo() -> None:  # a worker that answers each message with one as large
        try:
            while True:
                sequence, _urgent, message = theirs.recv()
                theirs.send((sequence, message))
        except (EOFError, OSError):
            pass

    threading.Thread(target=echo, daemon=True).start()

    class _NoProcess:
        exitcode = None

    link = _Process(_NoProcess(), ours, {})
    payload = b"x" * (256 << 10)
    answers: list[Any] = []

    def send_all() -> None:  # (in a thread: a deadlock must fail the test, not hang it)
        futures = [link.submit(("run", i, payload)) for i in range(40)]
        answers.extend(f.result(timeout=20) for f in futures)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    sender.join(30)
    assert not sender.is_alive(), "sender and reader deadlocked on a full pipe"
    assert [m[1] for m in answers] == list(range(40))
    ours.close()
    theirs.close()


def test_the_worker_takes_what_a_client_waits_for_before_background_releases() -> None:
    """A release of many traces already sent must not hold up a request whose client waits:
    the worker reads everything that arrived and takes urgent messages first, each class in
    the order sent; but a release that has waited a second goes next, so steady urgent work
    cannot starve it into the gateway's timeout."""
    from errorgate.pipeline.worker.client import _socket_pipe
    from errorgate.pipeline.worker.process import _Inbox

    now = [0.0]
    ours, theirs = _socket_pipe()
    inbox = _Inbox(theirs, max_background_wait=1.0, clock=lambda: now[0])
    for sequence, urgent in [(1, False), (2, False), (3, True), (4, False), (5, True)]:
        ours.send((sequence, urgent, ("run", sequence)))
    taken = [inbox.next()[0] for _ in range(3)]
    ours.send((6, True, ("run", 6)))  # arrives while background work is still waiting
    taken += [inbox.next()[0] for _ in range(3)]
    assert taken == [3, 5, 1, 6, 2, 4]
    # Background 7 waits while urgent work keeps coming, until it has waited a second.
    ours.send((7, False, ("run", 7)))
    for sequence in (8, 9):
        ours.send((sequence, True, ("run", sequence)))
    assert inbox.next()[0] == 8
    now[0] = 1.0
    ours.send((10, True, ("run", 10)))
    assert [inbox.next()[0] for _ in range(3)] == [7, 9, 10]
    ours.close()
    with pytest.raises(EOFError):
        inbox.next()
    theirs.close()


def test_late_spans_queue_behind_releases_and_intake_goes_first(tmp_path: Path) -> None:
    """Which batches the gateway marks urgent: intake a client waits for (logs here), yes;
    traces the assembler releases, no; and late spans, which the assembler passes on at once,
    no either: they must reach ``sample`` after their trace's release, to follow its decision."""
    with OtlpSink() as sink, running_gateway(_config(tmp_path, sink)) as gw:
        assert gw.worker is not None
        sent: list[tuple[str, bool, bool]] = []
        submit = gw.worker.submit

        def recording(keys: Any, batch: Any, urgent: bool = True) -> Any:
            sent.append((batch.signal.value, bool(batch.notes.get("late")), urgent))
            return submit(keys, batch, urgent)

        gw.worker.submit = recording  # type: ignore[method-assign]
        client = _Client(gw.grpc_endpoint)
        assert client.send_logs(_logs(3)) == grpc.StatusCode.OK
        assert client.send_traces(_traces(8)) == grpc.StatusCode.OK
        _wait(lambda: any(s == "traces" for s, _, _ in sent))
        assert client.send_traces(_late(8)) == grpc.StatusCode.OK
        client.close()
    assert sent[0] == ("logs", False, True)
    traces = sent[1:]
    assert traces and {urgent for _, _, urgent in traces} == {False}
    assert [late for _, late, _ in traces][-1] is True  # the late spans went through the worker too
