"""The configured processors in a worker process of their own (``service.processor_worker``).

Python runs one thread at a time per process, so a gateway that does everything in one
process tops out at one core however many the machine has. Intake (gRPC/HTTP, validation,
duplicate detection), the trace assembler with its durable hold log, the queues and the
exporters stay in the gateway process; the processors run in this worker, which gets a core
of its own. A pipeline's processors become one ``RemoteChain`` stage: one round trip per
batch, the request as bytes both ways, pipelined (several batches in flight).

The worker takes batches a client is waiting for (intake: ``urgent``) before traces the
assembler released in the background, so a request is not held up behind a large release
(unless that release has waited a second: steady intake must not starve it into the timeout);
within each class it keeps the order sent, so stateful processors see one consistent order.
The answers carry the sequence number of their message.

What crosses the pipe is only what a stage could see in-process: the serialized request and
its notes. The worker answers every batch before the gateway acknowledges or queues it, so
the delivery guarantee is unchanged. If the worker dies or does not answer within
``service.processor_worker.timeout``, the batches it held are dead-lettered (reason
``processor_error``, as for any failing processor), the worker is restarted with empty
state, and the gateway carries on. Its metrics are served by the gateway's ``/metrics``
(``WorkerMetrics``). If the gateway dies, at whatever moment, the worker and every process it
started end with it (``errorgate.lifeline``).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util  # noqa: F401  registers its exit handler first, so ours runs before it
import pickle
import socket
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from typing import Any

from errorgate import lifeline
from errorgate.component import Capabilities, ComponentContext, HttpAnswer, HttpQuery, Output, Processor
from errorgate.config import ConfigError
from errorgate.delivery.exporter import SerializedBatch
from errorgate.pipeline.worker.process import worker_main
from errorgate.pipeline.worker.protocol import NOTE_TYPES, Key, WorkerFailed, WorkerSettings, pack
from errorgate.signals import WIRE_NOTE, Batch, Signal

log = logging.getLogger("errorgate.processor_worker")

START_TIMEOUT_SECONDS = 120.0
SOCKET_BUFFER_BYTES = 4 << 20


class _Process:
    """One worker process and the gateway's end of its pipe. Batches are pipelined: callers
    send under ``send_lock`` (so the order of sends is the order the worker sees, within each
    priority) and wait on a future; one reader thread hands out the answers by sequence number.
    The reader never waits for ``send_lock``: a sender blocked on a full pipe must not keep it
    from draining the answers the worker is blocked on."""

    def __init__(self, process: Any, conn: Connection, signals: dict[Key, frozenset[Signal]]) -> None:
        self.process = process
        self.conn = conn
        self.signals = signals
        self.send_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self.pending: dict[int, Future[Any]] = {}
        self._sequence = 0
        self.alive = True
        self.reader = threading.Thread(target=self._read, name="errorgate-worker-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                sequence, reply = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                break
            with self._pending_lock:
                future = self.pending.pop(sequence)
            future.set_result(reply)
        with self._pending_lock:
            self.alive = False
            failed, self.pending = list(self.pending.values()), {}
        for future in failed:
            future.set_exception(WorkerFailed("processor_worker", "WorkerExited"))

    def submit(self, message: tuple[Any, ...], urgent: bool = True) -> Future[Any]:
        future: Future[Any] = Future()
        with self.send_lock:
            with self._pending_lock:
                if not self.alive:
                    raise WorkerFailed("processor_worker", "WorkerExited")
                self._sequence += 1
                sequence = self._sequence
                self.pending[sequence] = future  # before sending: the answer may come at once
            try:
                self.conn.send_bytes(pack((sequence, urgent, message)))
            except (EOFError, OSError):
                # The reader sees the pipe close and fails this future with the others.
                raise WorkerFailed("processor_worker", "WorkerExited") from None
        return future

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.join(5)
        except Exception:  # already gone
            pass
        self.conn.close()


_LIVE: weakref.WeakSet[ProcessorWorker] = weakref.WeakSet()


@atexit.register
def _kill_unclosed_workers() -> None:
    # A gateway never stopped (an embedding program exiting without ``stop()``): its worker
    # ignores SIGTERM, which is all multiprocessing's own exit handler sends before it joins.
    for worker in list(_LIVE):
        worker.kill()


class ProcessorWorker:
    """The gateway's handle on the worker process: start, run batches, restart, close."""

    def __init__(self, settings: WorkerSettings, restarts: Any = None) -> None:
        self.settings = settings
        self._restarts_metric = restarts  # a prometheus Counter, counted on each restart
        self._lock = threading.Lock()  # guards (re)starting; batches do not take it
        self._current: _Process | None = None
        self.restarts = 0
        self.signals: dict[Key, frozenset[Signal]] = {}
        self._closed = False
        self._final_metrics: list[Any] = []

    def start(self) -> None:
        """Start the process and build the processors there. Raises ConfigError as building
        them in-process would."""
        with self._lock:
            self._current = self._spawn()
            self.signals = self._current.signals
        _LIVE.add(self)

    def kill(self) -> None:
        """Stop the worker at once (no final metrics, no processor shutdown)."""
        with self._lock:
            current, self._current = self._current, None
            self._closed = True
        if current is not None:
            current.kill()

    def _spawn(self) -> _Process:
        ctx = lifeline.forkserver_context()
        parent, child = _socket_pipe()
        process = ctx.Process(
            # Not a daemon: daemons may not start processes, and redact's detection pool is some.
            target=worker_main,
            args=(child, self.settings, lifeline.guardians()),
            name="errorgate-processors",
            daemon=False,
        )
        process.start()
        child.close()
        if not parent.poll(START_TIMEOUT_SECONDS):
            process.kill()
            raise ConfigError(f"processor worker did not start within {START_TIMEOUT_SECONDS:.0f}s")
        try:
            kind, payload = parent.recv()
        except (EOFError, OSError):
            process.join(5)
            raise ConfigError(
                f"processor worker exited while starting (exit code {process.exitcode}; its error is "
                "logged above). A program that starts errorgate must guard its entry point with "
                "`if __name__ == '__main__':` (workers start with multiprocessing's forkserver), "
                "or set service.processor_worker.enabled: false"
            ) from None
        if kind == "error":
            process.join(5)
            raise ConfigError(str(payload))
        return _Process(process, parent, payload)

    def submit(self, keys: list[Key], batch: Batch, urgent: bool = True) -> Future[Any]:
        """Send ``batch`` through the processors ``keys`` in the worker; ``finish`` the answer.
        ``urgent``: a client waits for it (the worker takes it before background releases)."""
        wire = batch.notes.pop(WIRE_NOTE, None)
        data = wire if isinstance(wire, bytes) else batch.request.SerializeToString()
        notes = {k: v for k, v in batch.notes.items() if isinstance(v, NOTE_TYPES)}
        message = (
            "run",
            keys,
            batch.signal.value,
            data,
            notes,
            batch.received_at,
            batch.receiver,
            batch.tenant,
        )
        return self._submit(message, urgent)

    def finish(self, future: Future[Any]) -> tuple[Output, list[tuple[str, float]]]:
        reply = self._wait(future)
        if reply[0] == "failed":
            _, component_id, error_type, where, timings = reply
            raise _Failed(WorkerFailed(component_id, error_type, where), timings)
        _, parts, dropped, timings = reply
        out = Output(dropped=Counter(dropped))
        for signal_value, part, items, part_notes, received_at, receiver, tenant in parts:
            # Parsed only if a later stage or the exporter reads the request: queues take the bytes.
            made = SerializedBatch(Signal(signal_value), part, items)
            made.received_at, made.receiver, made.tenant = received_at, receiver, tenant
            made.notes.update(part_notes)
            made.notes[WIRE_NOTE] = part  # a next stage that reads the bytes need not serialize again
            out.batches.append(made)
        return out, timings

    def answer(self, key: Key, query: HttpQuery) -> HttpAnswer:
        """A hosted processor's answer to an HTTP request on one of its declared routes."""
        try:
            reply = self._wait(self._submit(("answer", key, query)))
        except WorkerFailed as e:
            return HttpAnswer(503, {"error": f"processor worker unavailable: {e.error_type}"})
        answer: HttpAnswer = reply[1]
        return answer

    def reload(self) -> None:
        """Ask every processor in the worker to re-read its files (SIGHUP at the gateway)."""
        if self._closed:
            return
        try:
            self._wait(self._submit(("reload",), urgent=False))
        except WorkerFailed:
            log.error("processor worker did not take the reload; it re-reads its files when restarted")

    def metrics(self) -> list[Any]:
        if self._closed:
            return self._final_metrics
        try:
            reply = self._wait(self._submit(("metrics",)))
        except WorkerFailed:
            return []
        return list(reply[1])

    def _submit(self, message: tuple[Any, ...], urgent: bool = True) -> Future[Any]:
        current = self._current
        if current is None or not current.alive:
            if self._closed:
                raise WorkerFailed("processor_worker", "Closed")
            with self._lock:
                current = self._current
                if current is None or not current.alive:
                    current = self._restart(current)
        return current.submit(message, urgent)

    def _wait(self, future: Future[Any]) -> Any:
        try:
            return future.result(self.settings.timeout)
        except FutureTimeout:
            current = self._current
            if current is not None and current.alive:
                log.error(
                    "processor worker did not answer within service.processor_worker.timeout; "
                    "it is restarted with empty state"
                )
                current.kill()  # its reader fails every batch still waiting
            raise WorkerFailed("processor_worker", "Timeout") from None

    def _restart(self, previous: _Process | None) -> _Process:
        if previous is not None:
            log.error(
                "processor worker exited (exit code %s); it is restarted with empty state",
                previous.process.exitcode,
            )
            previous.kill()
        try:
            self._current = self._spawn()
        except ConfigError as e:
            log.error("processor worker restart failed: %s", e)
            raise WorkerFailed("processor_worker", "RestartFailed") from None
        self.restarts += 1
        if self._restarts_metric is not None:
            self._restarts_metric.inc()
        return self._current

    def close(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        # The last counts stay readable after shutdown (as the gateway's own metrics do).
        self._final_metrics = self.metrics()
        with self._lock:
            current, self._current = self._current, None
            self._closed = True
        if current is None:
            return
        try:
            current.submit(("shutdown",), urgent=False).result(timeout)
        except (WorkerFailed, FutureTimeout):
            pass
        current.process.join(timeout)
        if current.process.is_alive():
            current.process.kill()
            current.process.join(5)
        current.conn.close()


def _socket_pipe() -> tuple[Connection, Connection]:
    """``multiprocessing.Pipe()`` with socket buffers that hold a whole release: a message then
    crosses in one write and one read, instead of several that each wait for the other side
    (and, in a busy process, for the GIL)."""
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    return Connection(a.detach()), Connection(b.detach())


class _Failed(Exception):
    def __init__(self, error: WorkerFailed, timings: list[tuple[str, float]]) -> None:
        super().__init__(str(error))
        self.error = error
        self.timings = timings


class RemoteChain(Processor):
    """A pipeline stage standing for consecutive isolated processors: one round trip per batch.
    Thread-safe from the gateway's side (the worker answers one batch at a time, in order)."""

    capabilities = Capabilities(
        thread_safe=True,
        reads_wire_note=True,
        times_itself=True,  # the pipeline records each hosted processor's own time, not the trip
    )

    def __init__(self, worker: ProcessorWorker, signal: Signal, context: ComponentContext) -> None:
        self.worker = worker
        self.signal = signal
        self.keys: list[Key] = []  # the hosted processors, in pipeline order
        self.context = context

    def process(self, batch: Batch) -> Output:
        return self.finish(self.submit(batch))

    def submit(self, batch: Batch, urgent: bool = True) -> Future[Any]:
        """Send without waiting: the pipeline sends all batches of a release before it waits.
        ``urgent`` is false for background releases (no client waits for them)."""
        return self.worker.submit(self.keys, batch, urgent)

    def finish(self, future: Future[Any]) -> Output:
        try:
            out, timings = self.worker.finish(future)
        except _Failed as failed:
            self._observe(failed.timings)
            raise failed.error from None
        self._observe(timings)
        return out

    def _observe(self, timings: list[tuple[str, float]]) -> None:
        telemetry = self.context.telemetry
        for component_id, seconds in timings:
            telemetry.child(telemetry.processor_latency, component_id, self.signal.value).observe(seconds)


class WorkerMetrics:
    """A Prometheus collector: the worker's metric families, fetched at scrape time."""

    def __init__(self, worker: ProcessorWorker) -> None:
        self.worker = worker

    def describe(self) -> list[Any]:
        return []  # the families are known only to the worker; they never repeat the gateway's

    def collect(self) -> Iterator[Any]:
        yield from self.worker.metrics()
