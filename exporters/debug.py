"""``debug`` exporter: one summary line per batch to stderr — counts and names, never values.

``basic``: signal and item count. ``normal``: also resources and the services they name
(``service.name`` identifies a service, it is not payload data).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Literal, TextIO

from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from errorgate import attributes
from errorgate.component import ComponentConfig, ComponentContext, Exporter, ExportResult, Factory
from errorgate.signals import Batch

_MAX_SERVICES = 10


class DebugExporterConfig(ComponentConfig):
    verbosity: Literal["basic", "normal"] = "basic"


class DebugExporter(Exporter):
    def __init__(self, config: DebugExporterConfig, context: ComponentContext | None = None) -> None:
        self.verbosity = config.verbosity
        self.component_id = context.component_id if context is not None else "debug"
        self.stream: TextIO | None = None  # None -> the current sys.stderr (tests capture it)
        self._lock = threading.Lock()

    def summary(self, batch: Batch) -> str:
        line = f"{self.component_id}: {batch.signal.value} items={batch.item_count()}"
        if self.verbosity == "basic":
            return line
        resources = list(_resources(batch))
        services = sorted({attributes.get_str(r.attributes, "service.name", "unknown") for r in resources})
        shown = ",".join(services[:_MAX_SERVICES]) + (",..." if len(services) > _MAX_SERVICES else "")
        return f"{line} resources={len(resources)} services={shown}"

    def export(self, batch: Batch, timeout: float) -> ExportResult:
        stream = self.stream or sys.stderr
        with self._lock:
            print(self.summary(batch), file=stream, flush=True)
        return ExportResult.ok()


def _resources(batch: Batch) -> Iterator[Resource]:
    request = batch.request
    for name in ("resource_spans", "resource_logs", "resource_metrics"):
        if hasattr(request, name):
            for container in getattr(request, name):
                yield container.resource
            return


def create_debug_exporter(config: DebugExporterConfig, context: ComponentContext) -> Exporter:
    return DebugExporter(config, context)


factory: Factory[DebugExporterConfig, Exporter] = Factory(
    "debug", DebugExporterConfig, create_debug_exporter, DebugExporter
)
