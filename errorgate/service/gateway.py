"""A running gateway from a validated ``Config``: receivers, the pipelines ``PipelineBuilder``
built, self-telemetry, the poll loop for held items, and an orderly shutdown."""

from __future__ import annotations

import logging
import signal as os_signal
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from errorgate import __version__
from errorgate.component import RECEIVERS, ComponentContext, component_type
from errorgate.config import Config, binds_all_interfaces
from errorgate.delivery.exporter import ITEMS_NOTE, SERIALIZED_NOTE
from errorgate.errors import Backpressure, InvalidRequest, StorageUnavailable
from errorgate.intake.contract import AcceptResult
from errorgate.intake.dedup import DedupCache
from errorgate.intake.proof import prove_valid
from errorgate.intake.validation import validate_request
from errorgate.otlp.decode import decode
from errorgate.pipeline.stages import Pipeline, poll_all
from errorgate.service.agent import AgentCheckServer
from errorgate.service.builder import PipelineBuilder
from errorgate.service.memory import MemoryLimiter
from errorgate.service.observability import ObservabilityServer, service_health
from errorgate.signals import Batch, ExportRequest, Signal, WireBatch, copy_request, count_items
from errorgate.telemetry import Telemetry

log = logging.getLogger("errorgate.gateway")

# After refusing data for lack of queue room, /readyz reports "fail" for this long, so a load
# balancer steers traffic to another replica instead of retrying into a full queue.
BACKPRESSURE_FAIL_SECONDS = 5.0
# How often dead letters past service.dead_letter.max_age are looked for.
DLQ_EXPIRY_SECONDS = 60.0


class Gateway:
    """``Gateway(config).start()`` … ``stop()``. Implements ``errorgate.intake.contract.Intake``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        svc = config.service
        self.data_dir = Path(svc.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.telemetry = Telemetry(svc.telemetry.metrics.label_caps)
        self.lock = threading.RLock()
        self.dedup = DedupCache(svc.dedup_window)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._reload_requested = threading.Event()
        self._last_backpressure = float("-inf")
        self._poll_thread: threading.Thread | None = None
        self._observability: ObservabilityServer | None = None
        self._agent: AgentCheckServer | None = None
        self.builder = PipelineBuilder(config, self.data_dir, self.telemetry, self.lock, self._stopping)
        self.extensions = self.builder.extensions
        self.dlq = self.builder.dlq
        self.exporters = self.builder.exporters
        self.disk = self.builder.disk_guard()
        limiter = svc.memory_limiter
        self.memory: MemoryLimiter | None = (
            MemoryLimiter(limiter.limit_mib, limiter.spike_limit_mib, limiter.check_interval, self.telemetry)
            if limiter.enabled
            else None
        )
        self.worker = self.builder.start_worker()
        try:
            self.pipelines = [self.builder.build(name) for name in svc.pipelines]
            for processor in self.builder.processors.values():
                processor.start()  # those run here; the worker starts its own
        except BaseException:
            if self.worker is not None:
                self.worker.close()
            raise
        self._routes: dict[tuple[str, Signal], list[Pipeline]] = {}
        for p in self.pipelines:
            for rid in p.receivers:
                self._routes.setdefault((rid, p.signal), []).append(p)
        self.receivers: list[Any] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for exporter in self.exporters.values():
            exporter.start()
        if self.memory is not None:
            self.memory.start()
        # Declared routes of the processors, longest prefix first (none shadows a longer one).
        routes = sorted(self.builder.http_routes(), key=lambda r: -len(r[0]))
        agent = self.config.service.telemetry.agent_check
        if agent.endpoint:
            self._agent = AgentCheckServer(agent, service_health(routes))
            self._agent.start()
        metrics_endpoint = self.config.service.telemetry.metrics.endpoint
        if metrics_endpoint:
            self._observability = ObservabilityServer(
                metrics_endpoint,
                self.telemetry.registry,
                self.readiness,
                __version__,
                routes,
            )
            self._observability.start()
            if binds_all_interfaces(self._observability.host):
                # /metrics names services and error groups; /readyz details the queues.
                log.warning(
                    "service.telemetry.metrics.endpoint listens on all network interfaces (%s): "
                    "reachable from other hosts; write 127.0.0.1 or the one address to serve on "
                    "unless that is intended",
                    self._observability.endpoint,
                )
        self._poll_thread = threading.Thread(target=self._poll_loop, name="errorgate-poll", daemon=True)
        self._poll_thread.start()
        used = sorted({r for p in self.pipelines for r in p.receivers})
        for receiver_id in used:
            for receiver in self._receivers(receiver_id):
                receiver.start()
                self.receivers.append(receiver)
                log.info(
                    "receiver listening",
                    extra={
                        "receiver": receiver_id,
                        "protocol": receiver.protocol,
                        "endpoint": receiver.endpoint,
                    },
                )
        log.info(
            "errorgate started", extra={"data_dir": str(self.data_dir), "pipelines": len(self.pipelines)}
        )

    def _receivers(self, receiver_id: str) -> list[Any]:
        factory = RECEIVERS.get(component_type(receiver_id))
        assert factory is not None  # config validation guarantees it
        context = ComponentContext(
            component_id=receiver_id,
            data_dir=self.data_dir,
            telemetry=self.telemetry,
            logger=logging.getLogger(f"errorgate.{receiver_id}"),
            extensions=self.extensions,
        )
        bind = factory.create(self.config.receivers[receiver_id], context)
        return list(bind(self))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop accepting, flush processors, drain exporters (or leave items in the persistent
        queue), then shut everything down. Returns True when every queue drained in time."""
        if self._stopped.is_set():
            return True
        timeout = self.config.service.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stopping.set()
        # Each stage logged at debug: a shutdown cut short (a supervisor's stop timeout) shows where.
        log.debug("stopping: receivers (requests in progress finish)")
        for receiver in self.receivers:
            receiver.stop(min(5.0, timeout))
        if self._poll_thread is not None:
            self._poll_thread.join(timeout=5)
        log.debug("stopping: flushing held items through the processors")
        # Traces first: log records held for their traces then meet the traces' decisions.
        poll_all(sorted(self.pipelines, key=lambda p: p.signal is not Signal.TRACES), time.time(), flush=True)
        log.debug("stopping: draining the exporters' queues")
        drained = all(e.drain(max(0.0, deadline - time.monotonic())) for e in self.exporters.values())
        for e in self.exporters.values():
            e.shutdown()
        for p in self.builder.processors.values():
            try:
                p.shutdown()
            except Exception as err:
                log.error("processor shutdown failed", extra={"error_type": type(err).__name__})
        for held in self.builder.held_stages:
            held.shutdown()
        if self.worker is not None:
            log.debug("stopping: processor worker")
            self.worker.close()
        for _, extension in self.extensions.items():
            extension.shutdown()
        if self._observability is not None:
            self._observability.stop()
        if self._agent is not None:
            self._agent.stop()
        if self.memory is not None:
            self.memory.stop()
        self._stopped.set()
        log.info("errorgate stopped", extra={"drained": drained})
        return drained

    def reload(self) -> None:
        """Processors re-read their files (SIGHUP): here under the pipeline lock, and in the worker."""
        log.info("reloading processor files")
        with self.lock:
            for processor in self.builder.processors.values():
                try:
                    processor.reload()
                except Exception as e:  # one processor's reload must not stop the others'
                    log.error("processor reload failed", extra={"error_type": type(e).__name__})
        if self.worker is not None:
            self.worker.reload()

    def run_until_signalled(self) -> int:
        """Block until SIGTERM/SIGINT, then stop cleanly (SIGHUP reloads). Returns the exit code."""
        got = threading.Event()

        def handler(signum: int, frame: object) -> None:
            log.info("signal received, shutting down", extra={"signal": os_signal.Signals(signum).name})
            got.set()

        os_signal.signal(os_signal.SIGTERM, handler)
        os_signal.signal(os_signal.SIGINT, handler)
        # The poll thread does the reload: a signal handler must not take the pipeline lock.
        os_signal.signal(os_signal.SIGHUP, lambda signum, frame: self._reload_requested.set())
        while not got.wait(0.5):
            pass
        self.stop()
        return 0

    def _poll_loop(self) -> None:
        interval = self.config.service.poll_interval
        next_expiry = time.monotonic() + DLQ_EXPIRY_SECONDS
        while not self._stopping.wait(interval):
            try:
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    self.reload()
                poll_all(self.pipelines, time.time())
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + DLQ_EXPIRY_SECONDS
                    self.dlq.expire()
            except Exception as e:  # keep polling; a failure here must not strand held items forever
                log.error("poll failed", extra={"error_type": type(e).__name__})

    # ------------------------------------------------------------------ endpoints

    def _receiver_endpoint(self, protocol: str) -> str:
        for r in self.receivers:
            if r.protocol == protocol:
                return str(r.endpoint)
        raise LookupError(f"no {protocol} receiver is running")

    @property
    def grpc_endpoint(self) -> str:
        return self._receiver_endpoint("grpc")

    @property
    def http_endpoint(self) -> str:
        return self._receiver_endpoint("http")

    @property
    def agent_check_endpoint(self) -> str:
        assert self._agent is not None, "service.telemetry.agent_check.endpoint is not set"
        return self._agent.endpoint

    @property
    def metrics_endpoint(self) -> str:
        if self._observability is None:
            raise LookupError("service.telemetry.metrics.endpoint is disabled")
        return self._observability.endpoint

    # ------------------------------------------------------------------ Intake

    def accept(
        self, signal: Signal, request: ExportRequest | None, *, raw: bytes | None, receiver: str
    ) -> AcceptResult:
        if self._stopping.is_set():
            raise Backpressure("errorgate is shutting down", retry_after=5.0)
        low = self.disk.low()
        if low is not None:
            raise StorageUnavailable(self.disk.message(low), retry_after=self._retry_after())
        memory = self.memory.over() if self.memory is not None else None
        if memory is not None:
            raise Backpressure(memory, retry_after=self._retry_after())
        try:
            return self._accept(signal, request, raw, receiver)
        except StorageUnavailable:
            # A write failed although the floor was not reached: not ready for a while, as when full.
            self._last_backpressure = time.monotonic()
            raise

    def _accept(
        self, signal: Signal, request: ExportRequest | None, raw: bytes | None, receiver: str
    ) -> AcceptResult:
        pipelines = self._routes.get((receiver, signal), [])
        nbytes = len(raw) if raw is not None else request.ByteSize()  # type: ignore[union-attr]
        if not all(p.has_room(nbytes) for p in pipelines):
            self._last_backpressure = time.monotonic()
            raise Backpressure("export queue is full", retry_after=self._retry_after())
        now = time.time()
        dedup_key = DedupCache.key(signal, raw) if raw is not None and self.dedup.enabled else None
        if dedup_key is not None and self.dedup.seen(dedup_key, now):
            n = count_items(request if request is not None else _decode(signal, raw))  # type: ignore[arg-type]
            self.telemetry.record_received(signal.value, n)
            self.telemetry.record_dropped(signal.value, "duplicate", n)
            self.telemetry.duplicate_batches.labels(signal.value).inc()
            return AcceptResult()
        # Receivers hand over the protobuf body as plain bytes (other encodings as a bytes subclass).
        encoded = raw if type(raw) is bytes else None
        limits = self.config.receivers[receiver].validation
        proof = prove_valid(signal, encoded, limits) if encoded is not None else None
        if proof is not None:
            # Proven valid from the bytes: nothing to reject, and nothing decoded unless a stage
            # or an exporter reads the request (``WireBatch``).
            validated = _Validated(0, "", proof.items, proof.canonical)
        else:
            if request is None:
                request = _decode(signal, encoded)  # type: ignore[arg-type]
            validated = self._validate(signal, request, receiver, encoded)
        n = validated.kept
        if not pipelines:
            # A receiver listed in no pipeline of this signal: nothing would process it.
            self.telemetry.record_received(signal.value, n)
            self.telemetry.record_dropped(signal.value, "no_pipeline", n)
            return AcceptResult(
                rejected_items=n, error_message=f"no {signal.value} pipeline uses this receiver"
            )
        self.telemetry.record_received(signal.value, n + validated.rejected)
        if validated.message:
            encoded = None  # validation took something out: the body no longer matches the request
        # The body can stand for the serialized request where a first processor reads the bytes.
        wire = encoded if validated.canonical else None
        for i, pipeline in enumerate(pipelines):
            batch = _batch(signal, request, encoded, now, receiver, copy=i < len(pipelines) - 1)
            if encoded is not None and not pipeline.stages:
                # Nothing will change the request: queue and export the received bytes as they are.
                batch.notes[SERIALIZED_NOTE] = encoded
                batch.notes[ITEMS_NOTE] = n
            pipeline.consume(batch, wire)
        if dedup_key is not None:
            self.dedup.remember(dedup_key, now)
        return AcceptResult(rejected_items=validated.rejected, error_message=validated.message)

    def _validate(
        self, signal: Signal, request: ExportRequest, receiver: str, encoded: bytes | None
    ) -> _Validated:
        rejections = validate_request(signal, request, self.config.receivers[receiver].validation, encoded)
        if not rejections:
            return _Validated(0, "", rejections.kept, rejections.canonical)
        self.dlq.put(
            signal,
            rejections.request,
            reason="invalid_item",
            detail=rejections.message(),
            source=f"receiver:{receiver}",
        )
        return _Validated(rejections.count, rejections.message(), rejections.kept, False)

    def _retry_after(self) -> float:
        return 2.0

    def readiness(self) -> tuple[str, dict[str, object]]:
        if self._stopping.is_set():
            return "fail", {"gateway": {"status": "fail", "output": "shutting down"}}
        checks: dict[str, object] = {}
        status = "pass"
        low = self.disk.low()
        if low is not None:
            status = "fail"
            checks["disk"] = {"status": "fail", "output": self.disk.message(low)}
        memory = self.memory.over() if self.memory is not None else None
        if memory is not None:
            status = "fail"
            checks["memory"] = {"status": "fail", "output": memory}
        if time.monotonic() - self._last_backpressure < BACKPRESSURE_FAIL_SECONDS:
            status = "fail"
            checks["gateway"] = {"status": "fail", "output": "refusing data: export queue full"}
        for exporter_id, exporter in self.exporters.items():
            state = exporter.state()
            if not state.get("accepting", True):
                check = "fail"
            elif state.get("circuit", "closed") != "closed":
                check = "warn"
            else:
                check = "pass"
            checks[f"exporter:{exporter_id}"] = {"status": check, **state}
            if check == "fail" or (check == "warn" and status == "pass"):
                status = check
        return status, checks


def _decode(signal: Signal, data: bytes) -> ExportRequest:
    """A body the receiver handed over undecoded; one that does not decode is the client's fault."""
    try:
        return decode(signal, data)
    except ValueError as e:  # its message quotes nothing of the body
        raise InvalidRequest(str(e)) from None


def _batch(
    signal: Signal,
    request: ExportRequest | None,
    encoded: bytes | None,
    now: float,
    receiver: str,
    copy: bool,
) -> Batch:
    """One pipeline's batch: over the received bytes when the request was never decoded (each
    pipeline decodes them only if it needs to), else the request (a copy for all but the last)."""
    if request is None:
        assert encoded is not None  # a request is decoded unless its body was proven valid
        return WireBatch(signal, encoded, received_at=now, receiver=receiver)
    return Batch(signal, copy_request(request) if copy else request, received_at=now, receiver=receiver)


class _Validated(NamedTuple):
    rejected: int  # items rejected (dead-lettered)
    message: str  # why, for partial_success ("" when nothing was rejected)
    kept: int  # items left in the request
    canonical: bool  # the received body is the request serialized (see RequestShape)
