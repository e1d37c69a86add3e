"""No process errorgate starts outlives the gateway, whatever moment the gateway dies at.

A real ``errorgate serve`` runs the embedded default config (every processor, the processor
worker, ``redact`` with its detection pool: ``workers: auto``) under steady gRPC load. It gets
SIGTERM, then SIGKILL a moment later — what a supervisor does when its stop timeout runs out —
timed by the gateway's debug log lines so that the kill lands in each stage of the shutdown:
the receivers finishing requests in progress, the final flush of held traces through the worker,
the exporters' drain, the worker's close. Within a few seconds, no process started from it may
be left: not the processor worker, not the forkservers multiprocessing starts, not redact's pool
workers, not the resource tracker.

Every process errorgate starts inherits the gateway's environment at start (forkservers and the
resource tracker are exec'd with it, the others are forked from those), so a token in the
environment finds them all, including any started after the snapshot and reparented ones."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from errorgate.config import default_config_text
from tests.support.gateway import GatewayProcess, free_port

MARKER = "ERRORGATE_TEST_LIFELINE"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# When to SIGKILL: ``delay`` seconds after the gateway logs ``stage`` (the stage lines are at
# debug), so the kill lands in each stage of the shutdown. Right after SIGTERM the receivers
# wait for requests in progress in the worker; 1.5 s after it is a supervisor's stop timeout
# seen to leave orphans; then the final flush of held traces through the worker, the exporters'
# drain, and the worker's close (its processors shutting down, redact's pool among them).
STAGES = [
    ("signal received", 0.1),
    ("signal received", 0.5),
    ("stopping: flushing", 0.0),
    ("stopping: draining", 0.0),
    ("stopping: processor worker", 0.0),
]
# gateway -> forkserver -> processor worker -> its forkserver -> redact pool worker
POOL_DEPTH = 4


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _traces(n: int, seed: int) -> bytes:
    """``n`` one-span traces whose attributes are new to redact (cache misses: the pool's work)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "checkout"))
    ss = rs.scope_spans.add()
    for i in range(n):
        span = ss.spans.add()
        span.trace_id = uuid.uuid4().bytes
        span.span_id = os.urandom(8)
        span.name = "GET /cart"
        span.start_time_unix_nano = time.time_ns()
        span.end_time_unix_nano = span.start_time_unix_nano + 1_000_000
        span.attributes.extend(
            [
                _kv(
                    "user.note", f"customer Maria Gonzalez {seed}-{i} called from +1 415 555 {i % 10000:04d}"
                ),
                _kv("enduser.id", f"user{seed}x{i}@example.com"),
            ]
        )
        if i % 5 == 0:
            span.status.code = 2  # ERROR: classify has work too, and sample keeps these
    return req.SerializeToString()


def _logs(n: int, seed: int) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", "checkout"))
    sl = rl.scope_logs.add()
    for i in range(n):
        record = sl.log_records.add()
        record.time_unix_nano = time.time_ns()
        record.severity_number = 17 if i % 4 == 0 else 9
        record.body.string_value = (
            f"payment {seed}-{i} for jane.doe{seed}x{i}@example.com by Peter Novak failed"
        )
    return req.SerializeToString()


class _Load:
    """Clients sending batches of ``size`` traces or log records, each as fast as the gateway
    answers, until stopped. ``size`` new values per batch reach redact's pool (its default
    ``pool_min_batch`` is 256). Refusals and errors during the shutdown are expected."""

    def __init__(self, endpoint: str, clients: int = 1, size: int = 300) -> None:
        self.size = size
        self.endpoint = endpoint
        self.stopping = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(10)

    def _run(self, client: int) -> None:
        with grpc.insecure_channel(self.endpoint) as channel:
            traces = channel.unary_unary(TRACES_EXPORT, request_serializer=bytes, response_deserializer=bytes)
            logs = channel.unary_unary(LOGS_EXPORT, request_serializer=bytes, response_deserializer=bytes)
            seed = client * 1_000_000
            while not self.stopping.is_set():
                seed += 1
                n = self.size
                call, body = (traces, _traces(n, seed)) if seed % 2 else (logs, _logs(n, seed))
                try:
                    call(body, timeout=10)
                    self.sent += 1
                except grpc.RpcError:
                    time.sleep(0.05)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _marked(token: str) -> dict[int, str]:
    """Running processes with ``MARKER=token`` in their environment: pid -> command line."""
    needle = f"{MARKER}={token}".encode()
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or another user's
            continue
        if _running(int(entry)):
            found[int(entry)] = cmdline[:120]
    return found


def _watching(pid: int) -> bool:
    """Holds a pidfd: a pool worker has passed its start-up (it watches its owner)."""
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[pidfd]"
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


def _depths(root: int) -> dict[int, int]:
    """The descendants of ``root`` (by their parent pids, read now) and their depth below it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
    depth = {root: 0}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if pid not in depth and ppid in depth:
                depth[pid] = depth[ppid] + 1
                changed = True
    del depth[root]
    return depth


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class _Log:
    """The gateway's stderr, read as it comes (a leftover child holds the pipe open, so reading
    it to its end could hang): the lines so far, and a wait for one."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._pipe = pipe
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in iter(self._pipe.readline, b""):
            self.lines.append(line.decode(errors="replace").rstrip())

    def wait_for(self, text: str, timeout: float) -> None:
        _wait_for(lambda: any(text in line for line in self.lines), timeout, repr(text))


def _config(tmp_path: Path) -> Path:
    """The embedded default with debug logs (the stage lines); ports and data dir come from the env."""
    text = default_config_text().rstrip()
    assert text.endswith('127.0.0.1:9464}"}')  # its last line: service.telemetry.metrics
    config = tmp_path / "errorgate.yaml"
    config.write_text(text + "\n    logs: {level: debug}\n")
    return config


@pytest.mark.parametrize(("stage", "delay"), STAGES)
def test_no_process_outlives_a_gateway_killed_during_shutdown(
    tmp_path: Path, stage: str, delay: float
) -> None:
    token = uuid.uuid4().hex
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        MARKER: token,
        "ERRORGATE_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "ERRORGATE_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
        "ERRORGATE_METRICS_ENDPOINT": f"127.0.0.1:{metrics_port}",
        "ERRORGATE_DATA_DIR": str(tmp_path / "data"),
    }
    gw = GatewayProcess(_config(tmp_path), grpc_port, metrics_port, env=env)
    try:
        gw.start()
        assert gw.proc is not None and gw.proc.stderr is not None
        root, log = gw.proc.pid, _Log(gw.proc.stderr)
        with _Load(gw.grpc_endpoint) as load:
            # Under load until redact's pool workers (in the processor worker) are up: started,
            # and past their start-up, the end of which is when they watch their owner (a pidfd).
            _wait_for(lambda: POOL_DEPTH in _depths(root).values(), 90, "redact's pool workers")
            _wait_for(
                lambda: all(_watching(p) for p, d in _depths(root).items() if d == POOL_DEPTH),
                90,
                "redact's pool workers to finish starting",
            )
            _wait_for(lambda: load.sent >= 2, 30, "some load to go through")
            started = {pid: depth for pid, depth in _depths(root).items() if pid in _marked(token)}
            gw.proc.send_signal(signal.SIGTERM)
            log.wait_for(stage, 30)
            time.sleep(delay)
            gw.kill()
        # The stage lines make the kill land inside the shutdown; a delay after "signal received"
        # may find it over on a quiet machine (a clean stop takes about a second): then the
        # check below is that a clean stop leaves nothing behind either.
        assert gw.proc.returncode == -signal.SIGKILL or (stage, delay) == ("signal received", 0.5), (
            "the shutdown was over before the kill"
        )
        deadline = time.monotonic() + 5
        left = _marked(token)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = _marked(token)
        assert left == {}, (
            f"SIGKILL {delay}s after {stage!r} left {len(left)} of its processes running: {left}; "
            f"before the kill (pid: depth below the gateway): {started}; its last lines: {log.lines[-3:]}"
        )
        assert sorted(set(started.values())) == [1, 2, 3, 4], started  # the whole chain was there
    finally:
        gw.close()
        for pid in _marked(token):  # a failing run must not leave them behind either
            os.kill(pid, signal.SIGKILL)
