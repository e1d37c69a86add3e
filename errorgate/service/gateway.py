"""Assembles a running gateway from a validated ``Config``: receivers, pipelines, exporters,
self-telemetry, the poll loop for held items, and an orderly shutdown."""

from __future__ import annotations

import logging
import os
import signal as os_signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from errorgate import __version__
from errorgate.component import EXPORTERS, PROCESSORS, ComponentContext, Processor
from errorgate.config import Config
from errorgate.delivery.exporter import ITEMS_NOTE, SERIALIZED_NOTE
from errorgate.errors import Backpressure
from errorgate.intake.contract import AcceptResult
from errorgate.intake.dedup import DedupCache
from errorgate.intake.validation import validate_request
from errorgate.pipeline.stages import Pipeline, Stage, poll_all
from errorgate.pipeline.worker.client import (
    ProcessorWorker,
    RemoteChain,
    WorkerMetrics,
    WorkerSettings,
)
from errorgate.service.observability import ObservabilityServer
from errorgate.signals import Batch, ExportRequest, Signal, copy_request, count_items
from errorgate.telemetry import Telemetry

if TYPE_CHECKING:
    from errorgate.pipeline.assembly.assembler import TraceAssembler

log = logging.getLogger("errorgate.gateway")
TEMPLATE_KEY = "errorgate.error.template"

# Processors that need whole traces get one shared trace assembler inserted before the first of them.
TRACE_AWARE_PROCESSORS = ("classify", "sample")
# After refusing data for lack of queue room, /readyz reports "fail" for this long, so a load
# balancer steers traffic to another replica instead of retrying into a full queue.
BACKPRESSURE_FAIL_SECONDS = 5.0


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
        self._last_backpressure = float("-inf")
        self._poll_thread: threading.Thread | None = None
        self._observability: ObservabilityServer | None = None
        self.services: dict[str, object] = {}
        self._setup_privacy_services()

        from errorgate.delivery.dlq import DeadLetterStore

        self.dlq = DeadLetterStore(self.data_dir / "dlq", self.telemetry, self._codec())
        self.exporters = self._build_exporters()
        self._processors: dict[tuple[str, int], Processor] = {}
        self.worker = self._start_worker()
        self._assemblers: list[TraceAssembler] = []
        try:
            self.pipelines = [self._build_pipeline(name) for name in svc.pipelines]
        except BaseException:
            if self.worker is not None:
                self.worker.close()
            raise
        self._routes: dict[tuple[str, Signal], list[Pipeline]] = {}
        for p in self.pipelines:
            for rid in p.receivers:
                self._routes.setdefault((rid, p.signal), []).append(p)
        self.receivers: list[Any] = []

    # ------------------------------------------------------------------ building

    def _context(self, component_id: str) -> ComponentContext:
        return ComponentContext(
            component_id=component_id,
            data_dir=self.data_dir,
            telemetry=self.telemetry,
            logger=logging.getLogger(f"errorgate.{component_id}"),
            services=self.services,
        )

    def _codec(self) -> Any:
        return self.services.get("codec")

    def _setup_privacy_services(self) -> None:
        """With an ``encrypt`` processor configured, one keyring serves field encryption, the
        redact processor's keyed actions, and encryption at rest of queues, DLQ and held items."""
        encrypt_ids = [cid for cid in self.config.processors if cid.split("/", 1)[0] == "encrypt"]
        if not encrypt_ids:
            return
        from errorgate.governance.crypto import AeadCodec
        from errorgate.processors.encrypt import keyring_from_config

        keyring = keyring_from_config(
            self.config.processors[encrypt_ids[0]], self.data_dir, logging.getLogger("errorgate.keyring")
        )
        self.services["keyring"] = keyring
        self.services["codec"] = AeadCodec(keyring, "at-rest")

    def _build_exporters(self) -> dict[str, Any]:
        from errorgate.delivery.exporter import QueuedExporter

        used = {e for p in self.config.service.pipelines.values() for e in p.exporters}
        built: dict[str, Any] = {}
        for exporter_id in sorted(used):
            cfg = self.config.exporters[exporter_id]
            factory = EXPORTERS.get(exporter_id.split("/", 1)[0])
            assert factory is not None  # config validation guarantees it
            ctx = self._context(exporter_id)
            exporter = factory.create(cfg, ctx)
            built[exporter_id] = QueuedExporter(exporter_id, exporter, cfg, ctx, self.dlq, self._codec())
        return built

    def _processor(self, component_id: str, signal: Signal, occurrence: int) -> Processor:
        # One instance per component id serves every signal (sample shares its decision cache
        # between traces and logs); a second pipeline of the same signal gets its own instance.
        key = (component_id, occurrence)
        if key not in self._processors:
            factory = PROCESSORS.get(component_id.split("/", 1)[0])
            assert factory is not None
            self._processors[key] = factory.create(
                self.config.processors[component_id], self._context(component_id)
            )
        return self._processors[key]

    def _occurrence(self, pipeline_name: str, component_id: str) -> int:
        """How many pipelines of the same signal before this one list the component."""
        signal = pipeline_name.split("/", 1)[0]
        pipelines = self.config.service.pipelines
        return sum(
            1
            for n in pipelines
            if n.split("/", 1)[0] == signal and n < pipeline_name and component_id in pipelines[n].processors
        )

    def _start_worker(self) -> ProcessorWorker | None:
        """The worker process that runs the configured processors, when enabled and any is
        configured. The trace assembler stays here, next to its durable hold log."""
        svc = self.config.service
        if not svc.processor_worker.enabled:
            return None
        hosted: dict[tuple[str, int], Any] = {}
        for name, spec in svc.pipelines.items():
            for component_id in spec.processors:
                key = (component_id, self._occurrence(name, component_id))
                hosted[key] = self.config.processors[component_id]
        if not hosted:
            return None
        for (component_id, _), cfg in hosted.items():
            if component_id.split("/", 1)[0] == "classify":
                # Its label caps apply gateway-wide (as when it runs in this process).
                from errorgate.processors.classify import apply_label_caps

                apply_label_caps(cfg, self.telemetry.cap)
        encrypt_ids = [cid for cid in self.config.processors if cid.split("/", 1)[0] == "encrypt"]
        logs = svc.telemetry.logs
        worker = ProcessorWorker(
            WorkerSettings(
                data_dir=self.data_dir,
                label_caps=dict(svc.telemetry.metrics.label_caps),
                log_level=logs.level,
                log_encoding=logs.encoding,
                components=hosted,
                timeout=svc.processor_worker.timeout,
                keyring_config=self.config.processors[encrypt_ids[0]] if encrypt_ids else None,
                environ=dict(os.environ),
            ),
            restarts=self.telemetry.worker_restarts,
        )
        worker.start()
        self.telemetry.registry.register(WorkerMetrics(worker))  # type: ignore[arg-type]
        return worker

    def _build_pipeline(self, name: str) -> Pipeline:
        spec = self.config.service.pipelines[name]
        signal = Signal(name.split("/", 1)[0])
        stages: list[Stage] = []
        for component_id in spec.processors:
            type_name = component_id.split("/", 1)[0]
            if (
                signal is Signal.TRACES
                and type_name in TRACE_AWARE_PROCESSORS
                and not any(s.component_id.startswith("assembly") for s in stages)
            ):
                stages.append(Stage(f"assembly/{name}", self._assembler(spec.processors, name)))
            if (
                signal is Signal.LOGS
                and type_name in TRACE_AWARE_PROCESSORS
                and not any(s.component_id.startswith("log-hold") for s in stages)
            ):
                hold = self._log_hold(spec.processors, name)
                if hold is not None:
                    stages.append(Stage(f"log-hold/{name}", hold))
            occurrence = self._occurrence(name, component_id)
            key = (component_id, occurrence)
            if self.worker is not None and key in self.worker.signals:
                if signal not in self.worker.signals[key]:
                    continue
                last = stages[-1].processor if stages else None
                if not isinstance(last, RemoteChain):
                    last = RemoteChain(self.worker, signal, self._context(f"processor_worker/{name}"))
                    stages.append(Stage(component_id, last))
                else:
                    stages[-1].component_id += "+" + component_id
                last.keys.append(key)
                continue
            processor = self._processor(component_id, signal, occurrence)
            if signal not in getattr(processor, "signals", frozenset(Signal)):
                continue  # e.g. a traces-only processor listed in a metrics pipeline: documented no-op
            stages.append(Stage(component_id, processor))
        if signal in (Signal.TRACES, Signal.LOGS) and not self._template_redacted(spec.processors):
            log.warning(
                "pipeline %s: classify runs without a redact after it that lists %s in "
                "free_text_keys; templates have numbers, ids, e-mails, IPs and URLs replaced, "
                "but personal names in error messages reach the backend",
                name,
                TEMPLATE_KEY,
            )
        return Pipeline(
            name=name,
            signal=signal,
            receivers=list(spec.receivers),
            stages=stages,
            exporters=[(e, self.exporters[e]) for e in spec.exporters],
            telemetry=self.telemetry,
            dlq=self.dlq,
            lock=self.lock,
        )

    def _template_redacted(self, processor_ids: list[str]) -> bool:
        """Whether ``errorgate.error.template`` is cleaned of names: classify's parameterization
        replaces what patterns find; names need redact's NER, so a redact must follow classify."""
        types = [c.split("/", 1)[0] for c in processor_ids]
        if "classify" not in types:
            return True
        after = processor_ids[types.index("classify") + 1 :]
        return any(
            c.split("/", 1)[0] == "redact"
            and TEMPLATE_KEY in getattr(self.config.processors[c], "free_text_keys", ())
            for c in after
        )

    def _sample_config(self, processor_ids: list[str]) -> Any:
        sample_ids = [c for c in processor_ids if c.split("/", 1)[0] == "sample"]
        return self.config.processors[sample_ids[0]] if sample_ids else None

    def _assembler(self, processor_ids: list[str], pipeline_name: str) -> Processor:
        from errorgate.pipeline.assembly.assembler import TraceAssembler

        context = self._context(f"assembly/{pipeline_name}")
        assembler = TraceAssembler.from_sample_config(self._sample_config(processor_ids), context)
        self._assemblers.append(assembler)
        return assembler

    def _log_hold(self, processor_ids: list[str], pipeline_name: str) -> Processor | None:
        """The stage that makes log records wait for their trace, if any trace is assembled."""
        from errorgate.pipeline.assembly.assembler import assembly_settings
        from errorgate.pipeline.hold.logs import LogHold
        from errorgate.pipeline.hold.records import open_store

        settings = assembly_settings(self._sample_config(processor_ids))
        assembled = any(
            name.split("/", 1)[0] == Signal.TRACES.value
            and any(c.split("/", 1)[0] in TRACE_AWARE_PROCESSORS for c in spec.processors)
            for name, spec in self.config.service.pipelines.items()
        )
        if not (settings.hold_logs and assembled):
            return None
        context = self._context(f"log-hold/{pipeline_name}")
        assemblers = self._assemblers  # filled as traces pipelines are built, before or after this one
        return LogHold(
            settings,
            context,
            lambda tid: any(a.holds(tid) for a in assemblers),
            open_store(context),
            lambda tid: any(a.released(tid) for a in assemblers),
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        from errorgate.receiver import build_receivers

        for exporter in self.exporters.values():
            exporter.start()
        metrics_endpoint = self.config.service.telemetry.metrics.endpoint
        if metrics_endpoint:
            self._observability = ObservabilityServer(
                metrics_endpoint, self.telemetry.registry, self.readiness, __version__
            )
            self._observability.start()
        self._poll_thread = threading.Thread(target=self._poll_loop, name="errorgate-poll", daemon=True)
        self._poll_thread.start()
        used = sorted({r for p in self.pipelines for r in p.receivers})
        for receiver_id in used:
            cfg = self.config.receivers[receiver_id]
            for receiver in build_receivers(
                receiver_id, cfg, self, logging.getLogger(f"errorgate.{receiver_id}"), self.telemetry
            ):
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

    def stop(self, timeout: float | None = None) -> bool:
        """Stop accepting, flush processors, drain exporters (or leave items in the persistent
        queue), then shut everything down. Returns True when every queue drained in time."""
        if self._stopped.is_set():
            return True
        timeout = self.config.service.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stopping.set()
        for receiver in self.receivers:
            receiver.stop(min(5.0, timeout))
        if self._poll_thread is not None:
            self._poll_thread.join(timeout=5)
        # Traces first: log records held for their traces then meet the traces' decisions.
        poll_all(sorted(self.pipelines, key=lambda p: p.signal is not Signal.TRACES), time.time(), flush=True)
        drained = all(e.drain(max(0.0, deadline - time.monotonic())) for e in self.exporters.values())
        for e in self.exporters.values():
            e.shutdown()
        for p in self._processors.values():
            try:
                p.shutdown()
            except Exception as err:
                log.error("processor shutdown failed", extra={"error_type": type(err).__name__})
        for pipeline in self.pipelines:
            for stage in pipeline.stages:
                if stage.component_id.startswith(("assembly/", "log-hold/")):
                    stage.processor.shutdown()
        if self.worker is not None:
            self.worker.close()
        if self._observability is not None:
            self._observability.stop()
        self._stopped.set()
        log.info("errorgate stopped", extra={"drained": drained})
        return drained

    def run_until_signalled(self) -> int:
        """Block until SIGTERM/SIGINT, then stop cleanly. Returns the process exit code."""
        got = threading.Event()

        def handler(signum: int, frame: object) -> None:
            log.info("signal received, shutting down", extra={"signal": os_signal.Signals(signum).name})
            got.set()

        os_signal.signal(os_signal.SIGTERM, handler)
        os_signal.signal(os_signal.SIGINT, handler)
        while not got.wait(0.5):
            pass
        self.stop()
        return 0

    def _poll_loop(self) -> None:
        interval = self.config.service.poll_interval
        while not self._stopping.wait(interval):
            try:
                poll_all(self.pipelines, time.time())
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
    def metrics_endpoint(self) -> str:
        if self._observability is None:
            raise LookupError("service.telemetry.metrics.endpoint is disabled")
        return self._observability.endpoint

    # ------------------------------------------------------------------ Intake

    def accept(
        self, signal: Signal, request: ExportRequest, *, raw: bytes | None, receiver: str
    ) -> AcceptResult:
        if self._stopping.is_set():
            raise Backpressure("errorgate is shutting down", retry_after=5.0)
        pipelines = self._routes.get((receiver, signal), [])
        nbytes = len(raw) if raw is not None else request.ByteSize()
        if not all(p.has_room(nbytes) for p in pipelines):
            self._last_backpressure = time.monotonic()
            raise Backpressure("export queue is full", retry_after=self._retry_after())
        now = time.time()
        dedup_key = DedupCache.key(signal, raw) if raw is not None and self.dedup.enabled else None
        if dedup_key is not None and self.dedup.seen(dedup_key, now):
            n = count_items(request)
            self.telemetry.record_received(signal.value, n)
            self.telemetry.record_dropped(signal.value, "duplicate", n)
            self.telemetry.duplicate_batches.labels(signal.value).inc()
            return AcceptResult()
        # Receivers hand over the protobuf body as plain bytes (other encodings as a bytes subclass).
        encoded = raw if type(raw) is bytes else None
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
            req = request
            if i < len(pipelines) - 1:
                req = copy_request(request)
            batch = Batch(signal, req, received_at=now, receiver=receiver)
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
        limits = self.config.receivers[receiver].validation
        rejections = validate_request(signal, request, limits, encoded)
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


class _Validated(NamedTuple):
    rejected: int  # items rejected (dead-lettered)
    message: str  # why, for partial_success ("" when nothing was rejected)
    kept: int  # items left in the request
    canonical: bool  # the received body is the request serialized (see RequestShape)
