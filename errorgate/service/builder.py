"""Builds what ``service.pipelines`` describes: extensions, exporters with their queues,
processors (here or in the processor worker), the trace assembler and log hold in front of
processors that need whole traces, and one ``Pipeline`` per entry.

Everything here is decided from declarations: a processor type's ``Capabilities`` and
``signals`` (read from its factory, before any instance exists, since it may only ever be built
in the worker), its settings' ``ComponentConfig`` hooks, and the extensions' own contracts.
No component is known here by name.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import partial
from pathlib import Path
from typing import Any

from errorgate.component import (
    EXPORTERS,
    EXTENSIONS,
    PROCESSORS,
    ComponentContext,
    Extension,
    Extensions,
    Factory,
    HttpAnswer,
    HttpQuery,
    Processor,
    Route,
    component_type,
    processor_capabilities,
    processor_signals,
)
from errorgate.config import Config, needs_whole_traces, rules_sha256
from errorgate.delivery.disk import DiskGuard
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.delivery.exporter import QueuedExporter
from errorgate.pipeline.assembly.assembler import TraceAssembler
from errorgate.pipeline.hold.logs import LogHold
from errorgate.pipeline.hold.records import open_store
from errorgate.pipeline.stages import Pipeline, Stage
from errorgate.pipeline.worker.client import ProcessorWorker, RemoteChain, WorkerMetrics
from errorgate.pipeline.worker.protocol import Key, WorkerSettings
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry

log = logging.getLogger("errorgate.gateway")


def pipeline_signal(pipeline_name: str) -> Signal:
    """``traces/backup`` -> ``Signal.TRACES`` (config validation guarantees the prefix)."""
    return Signal(component_type(pipeline_name))


def build_extensions(config: Config, data_dir: Path, telemetry: Telemetry) -> Extensions:
    """The extensions ``service.extensions`` enables (also what commands such as ``errorgate dlq``
    use to read what ``serve`` wrote: the same keyring, the same at-rest codec)."""
    built: dict[str, Extension] = {}
    for extension_id, cfg in config.enabled_extensions().items():
        factory = EXTENSIONS.get(component_type(extension_id))
        assert factory is not None  # config validation guarantees it
        context = ComponentContext(
            component_id=extension_id,
            data_dir=data_dir,
            telemetry=telemetry,
            logger=logging.getLogger(f"errorgate.{extension_id}"),
        )
        built[extension_id] = factory.create(cfg, context)
    return Extensions(built)


class PipelineBuilder:
    """One per gateway: owns what the pipelines share (extensions, exporters, processor
    instances, the worker, the assemblers) so that ``Gateway`` only runs them."""

    def __init__(
        self,
        config: Config,
        data_dir: Path,
        telemetry: Telemetry,
        lock: threading.RLock,
        stopping: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.telemetry = telemetry
        self.lock = lock
        self.stopping = stopping or threading.Event()
        self.extensions = build_extensions(config, data_dir, telemetry)
        bounds = config.service.dead_letter
        self.dlq = DeadLetterStore(
            data_dir / "dlq",
            telemetry,
            self.extensions.at_rest_codec(),
            max_bytes=int(bounds.max_size_mib * 1048576),
            max_age=bounds.max_age,
            min_free_bytes=int(config.service.disk.min_free_mib * 1048576),
            on_expired=self.extensions.audit,  # a signed audit event when a keyring extension runs
        )
        # Rules changed since the audit log last saw them (first start included): recorded.
        self.extensions.audit_change("rules_change", "rules_sha256", rules_sha256(config))
        self.exporters = self._build_exporters()
        self.processors: dict[Key, Processor] = {}
        self.assemblers: list[TraceAssembler] = []
        self.held_stages: list[Processor] = []  # assemblers and log holds, shut down with the gateway
        self.worker: ProcessorWorker | None = None

    def context(self, component_id: str) -> ComponentContext:
        return ComponentContext(
            component_id=component_id,
            data_dir=self.data_dir,
            telemetry=self.telemetry,
            logger=logging.getLogger(f"errorgate.{component_id}"),
            extensions=self.extensions,
            ha=self.config.ha,
        )

    # ------------------------------------------------------------ shared parts

    def _build_exporters(self) -> dict[str, QueuedExporter]:
        used = {e for p in self.config.service.pipelines.values() for e in p.exporters}
        built: dict[str, QueuedExporter] = {}
        codec = self.extensions.at_rest_codec()
        for exporter_id in sorted(used):
            cfg = self.config.exporters[exporter_id]
            factory = EXPORTERS.get(component_type(exporter_id))
            assert factory is not None  # config validation guarantees it
            ctx = self.context(exporter_id)
            built[exporter_id] = QueuedExporter(
                exporter_id, factory.create(cfg, ctx), cfg, ctx, self.dlq, codec
            )
        return built

    def occurrence(self, pipeline_name: str, component_id: str) -> int:
        """How many pipelines of the same signal before this one list the component. One
        instance per component id serves every signal (sample shares its decision cache between
        traces and logs); a second pipeline of the same signal gets its own instance."""
        signal = component_type(pipeline_name)
        pipelines = self.config.service.pipelines
        return sum(
            1
            for n in pipelines
            if component_type(n) == signal and n < pipeline_name and component_id in pipelines[n].processors
        )

    def _processor(self, key: Key) -> Processor:
        if key not in self.processors:
            component_id = key[0]
            self.processors[key] = self._factory(component_id).create(
                self.config.processors[component_id], self.context(component_id)
            )
        return self.processors[key]

    def _factory(self, component_id: str) -> Factory[Any, Processor]:
        factory = PROCESSORS.get(component_type(component_id))
        assert factory is not None  # config validation guarantees it
        return factory

    def disk_guard(self) -> DiskGuard:
        """Free-space watch over every directory acknowledged data is written to."""
        directories = {"data_dir": self.data_dir}
        for exporter_id, exporter in self.exporters.items():
            if exporter.queue_directory is not None:
                directories[f"queue:{exporter_id}"] = exporter.queue_directory
        disk = self.config.service.disk
        return DiskGuard(
            directories, disk.min_free_mib, disk.check_interval, self.telemetry, reclaim=self.dlq.give_way
        )

    # ------------------------------------------------------------ the processor worker

    def start_worker(self) -> ProcessorWorker | None:
        """The worker process that runs the configured processors, when enabled and any is
        configured. The trace assembler stays here, next to its durable hold log."""
        svc = self.config.service
        if not svc.processor_worker.enabled:
            return None
        hosted: dict[Key, Any] = {}
        for name, spec in svc.pipelines.items():
            for component_id in spec.processors:
                hosted[(component_id, self.occurrence(name, component_id))] = self.config.processors[
                    component_id
                ]
        if not hosted:
            return None
        for cfg in hosted.values():
            # Caps a component sets apply gateway-wide (as when it runs in this process).
            for label, value in cfg.gateway_label_caps(self.telemetry.cap.caps()).items():
                self.telemetry.cap.set_cap(label, value)
        logs = svc.telemetry.logs
        worker = ProcessorWorker(
            WorkerSettings(
                data_dir=self.data_dir,
                label_caps=dict(svc.telemetry.metrics.label_caps),
                log_level=logs.level,
                log_encoding=logs.encoding,
                components=hosted,
                timeout=svc.processor_worker.timeout,
                extensions=self.config.enabled_extensions(),
                environ=dict(os.environ),
                ha=self.config.ha,
            ),
            restarts=self.telemetry.worker_restarts,
        )
        worker.start()
        self.telemetry.registry.register(WorkerMetrics(worker))  # type: ignore[arg-type]
        self.worker = worker
        return worker

    # ------------------------------------------------------------ pipelines

    def build(self, name: str) -> Pipeline:
        spec = self.config.service.pipelines[name]
        signal = pipeline_signal(name)
        stages: list[Stage] = []
        for component_id in spec.processors:
            if processor_capabilities(self._factory(component_id)).needs_whole_traces:
                self._add_trace_stage(stages, name, signal)
            self._add_processor_stage(stages, name, signal, component_id)
        self._warn_unclean_free_text(name, signal, spec.processors)
        running = [c for c in spec.processors if signal in processor_signals(self._factory(c))]
        self.telemetry.declare_pipeline(
            signal.value,
            running,
            list(spec.exporters),
            frozenset().union(*(processor_capabilities(self._factory(c)).drop_reasons for c in running)),
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
            stopping=self.stopping,
        )

    def _add_trace_stage(self, stages: list[Stage], name: str, signal: Signal) -> None:
        """Once per pipeline, before the first processor that needs whole traces: the trace
        assembler (traces), or the hold that makes traced log records wait for their trace."""
        if any(isinstance(s.processor, TraceAssembler | LogHold) for s in stages):
            return
        if signal is Signal.TRACES:
            stages.append(Stage(f"assembly/{name}", self._assembler(name)))
        elif signal is Signal.LOGS:
            hold = self._log_hold(name)
            if hold is not None:
                stages.append(Stage(f"log-hold/{name}", hold))

    def _add_processor_stage(self, stages: list[Stage], name: str, signal: Signal, component_id: str) -> None:
        key = (component_id, self.occurrence(name, component_id))
        if self.worker is not None and key in self.worker.signals:
            if signal not in self.worker.signals[key]:
                return
            last = stages[-1].processor if stages else None
            if not isinstance(last, RemoteChain):
                last = RemoteChain(self.worker, signal, self.context(f"processor_worker/{name}"))
                stages.append(Stage(component_id, last))
            else:
                stages[-1].component_id += "+" + component_id
            last.keys.append(key)
            return
        if signal not in processor_signals(self._factory(component_id)):
            return  # e.g. a traces-only processor listed in a metrics pipeline: documented no-op
        stages.append(Stage(component_id, self._processor(key)))

    def http_routes(self) -> list[tuple[str, Route]]:
        """(path prefix, handler) of every route a built processor declares
        (``Capabilities.http_routes``), wherever the processor runs."""
        routes: list[tuple[str, Route]] = []
        hosted = self.worker.signals if self.worker is not None else {}
        for key in sorted(hosted):
            worker = self.worker
            assert worker is not None
            for prefix in processor_capabilities(self._factory(key[0])).http_routes:
                routes.append((prefix, partial(worker.answer, key)))
        for key in sorted(self.processors):
            processor = self.processors[key]
            for prefix in processor.capabilities.http_routes:
                routes.append((prefix, self._locked(processor)))
        return routes

    def _locked(self, processor: Processor) -> Route:
        if processor.capabilities.thread_safe:
            return processor.answer

        def answer(query: HttpQuery) -> HttpAnswer:
            with self.lock:  # as ``process`` runs: one at a time with the batches
                return processor.answer(query)

        return answer

    def _assembler(self, pipeline_name: str) -> TraceAssembler:
        context = self.context(f"assembly/{pipeline_name}")
        assembler = TraceAssembler(self.config.assembly_for(pipeline_name), context, open_store(context))
        self.assemblers.append(assembler)
        self.held_stages.append(assembler)
        return assembler

    def _log_hold(self, pipeline_name: str) -> LogHold | None:
        """The stage that makes log records wait for their trace, if any trace is assembled."""
        settings = self.config.assembly_for(pipeline_name)
        assembled = any(
            pipeline_signal(name) is Signal.TRACES and needs_whole_traces(self.config, spec.processors)
            for name, spec in self.config.service.pipelines.items()
        )
        if not (settings.hold_logs and assembled):
            return None
        context = self.context(f"log-hold/{pipeline_name}")
        assemblers = self.assemblers  # filled as traces pipelines are built, before or after this one
        hold = LogHold(
            settings,
            context,
            lambda tid: any(a.holds(tid) for a in assemblers),
            open_store(context),
            lambda tid: any(a.released(tid) for a in assemblers),
        )
        self.held_stages.append(hold)
        return hold

    def _warn_unclean_free_text(self, name: str, signal: Signal, processor_ids: list[str]) -> None:
        """A processor that writes free text that may quote personal names (classify's template:
        patterns replace numbers, ids, e-mails, IPs and URLs, not names) should be followed by
        one whose settings clean those keys (redact's NER)."""
        if signal not in (Signal.TRACES, Signal.LOGS):
            return
        for i, component_id in enumerate(processor_ids):
            written = processor_capabilities(self._factory(component_id)).writes_free_text
            cleaned: set[str] = set()
            for later in processor_ids[i + 1 :]:
                cleaned |= self.config.processors[later].cleaned_free_text()
            for key in sorted(written - cleaned):
                log.warning(
                    "pipeline %s: %s writes %s, and no processor after it cleans that key "
                    "(redact's free_text_keys); personal names in it reach the backend",
                    name,
                    component_id,
                    key,
                )
