"""The contracts every component implements, and the registries that find them by type name.

Four kinds, as in the OpenTelemetry Collector: receivers take telemetry in, processors transform
batches, exporters send them out, extensions are shared services (a keyring, a service catalog)
that other components use by type. Each component module defines a pydantic config model, its
class, and one ``Factory`` (``factory = Factory("sample", SampleConfig, create, SampleProcessor)``);
the distribution lists the factories once, as entry points in ``pyproject.toml``
(``[project.entry-points."errorgate.processors"]``), and the registries here load them on first
use. The core asks a component's declared ``Capabilities``, never its type name.
"""

from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from errorgate.signals import Batch, Signal

if TYPE_CHECKING:
    from errorgate.codec import BytesCodec
    from errorgate.telemetry import Telemetry


def component_type(component_id: str) -> str:
    """The type part of a component id: ``otlp/backup`` -> ``otlp`` (the Collector's ``type/name``)."""
    return component_id.split("/", 1)[0]


class ComponentConfig(BaseModel):
    """Base for every component's settings: unknown keys are errors.

    The methods below are what the core may ask of any component's settings; a component
    overrides those that apply to it (the defaults say "nothing")."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    def lineage(self) -> list[str]:
        """Lines for ``errorgate lineage``: how these settings treat fields (no values)."""
        return []

    def cleaned_free_text(self) -> frozenset[str]:
        """Attribute keys whose free text this component cleans of personal data (names)."""
        return frozenset()

    def gateway_label_caps(self, gateway_caps: Mapping[str, int]) -> dict[str, int]:
        """Label caps this component sets on the gateway's metrics, given those configured
        gateway-wide (``service.telemetry.metrics.label_caps``)."""
        return {}

    def implied_extensions(self) -> dict[str, ComponentConfig]:
        """Extensions these settings configure when the file declares none of that id (e.g. the
        keyring an ``encrypt`` section describes): id -> the extension's validated settings."""
        return {}


@dataclass(frozen=True)
class Capabilities:
    """What a processor declares about itself (the Collector's ``consumer.Capabilities``), so
    the pipeline and the gateway decide from declarations, never from type names or probes."""

    # ``process`` may run concurrently, outside the gateway-wide lock that orders stateful ones.
    thread_safe: bool = False
    # Wants the request's serialized bytes (``WIRE_NOTE``) when the pipeline has them at hand.
    reads_wire_note: bool = False
    # Records its own latency (a stage standing for several processors); the pipeline does not.
    times_itself: bool = False
    # What it passes on at intake queues behind its earlier background releases.
    releases_in_background: bool = False
    # Needs whole traces: the gateway assembles traces (and holds traced log records) before it.
    needs_whole_traces: bool = False
    # Attribute keys it writes whose text may quote personal names (a later stage should clean them).
    writes_free_text: frozenset[str] = frozenset()
    # Path prefixes it answers on the metrics endpoint (``Processor.answer``), e.g. "/api/v1/verdict".
    http_routes: frozenset[str] = frozenset()
    # The reasons it reports in ``Output.dropped``: their counters are exported at 0 from start-up.
    drop_reasons: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HttpQuery:
    """A request to a route a processor declared (plain data: it may cross to the worker)."""

    method: str  # GET or POST
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: Mapping[str, object]  # sent as JSON
    content_type: str = "application/json"


Route = Callable[[HttpQuery], HttpAnswer]


@dataclass(frozen=True)
class ExporterCapabilities:
    """What an exporter declares about itself."""

    # ``export`` takes the serialized request (a ``WireBatch``) as it is: the queue need not parse it.
    sends_serialized: bool = False


class Extension:
    """A shared service other components use by type (``ComponentContext.extension``): built
    once per process from ``extensions:`` / ``service.extensions``, shut down last."""

    def at_rest_codec(self) -> BytesCodec | None:
        """The codec for what errorgate writes to disk (queues, dead letters, held items), if
        this extension provides one."""
        return None

    def audit(self, record: Mapping[str, Any]) -> None:
        """Record a governance event (dead letters expired...) if this extension keeps an audit
        log. ``record`` carries no payload values. Must not raise: the caller goes on either way."""

    def audit_change(self, event: str, key: str, value: str) -> None:
        """Record ``event`` with ``key: value`` if ``value`` differs from the last one recorded
        for that event (e.g. the processors' rules hash at start-up), if this extension audits."""

    def shutdown(self) -> None:
        """Free resources. Called once, after every component that uses it has shut down."""


E = TypeVar("E", bound=Extension)


class Extensions:
    """The running extensions, looked up by type: processors receive typed handles."""

    def __init__(self, built: Mapping[str, Extension] | None = None) -> None:
        self._built = dict(built or {})

    def get(self, kind: type[E]) -> E | None:
        """The extension of type ``kind`` (the first by id when several are configured)."""
        for extension_id in sorted(self._built):
            extension = self._built[extension_id]
            if isinstance(extension, kind):
                return extension
        return None

    def items(self) -> list[tuple[str, Extension]]:
        return sorted(self._built.items())

    def at_rest_codec(self) -> BytesCodec | None:
        for _, extension in self.items():
            codec = extension.at_rest_codec()
            if codec is not None:
                return codec
        return None

    def audit(self, record: Mapping[str, Any]) -> None:
        for _, extension in self.items():
            extension.audit(record)

    def audit_change(self, event: str, key: str, value: str) -> None:
        for _, extension in self.items():
            extension.audit_change(event, key, value)


@dataclass
class ComponentContext:
    """What the gateway hands a component when it builds it."""

    component_id: str  # e.g. "otlp/backup"
    data_dir: Path
    telemetry: Telemetry
    logger: logging.Logger
    extensions: Extensions = field(default_factory=Extensions)
    # The top-level ``ha:`` settings (``errorgate.config.HaConfig``): a singleton role (rollback)
    # elects a leader with them (``errorgate.ha``); None: this instance acts alone.
    ha: Any = None

    @property
    def type_name(self) -> str:
        return component_type(self.component_id)

    def extension(self, kind: type[E]) -> E | None:
        return self.extensions.get(kind)

    def state_dir(self) -> Path:
        """A directory private to this component for durable state (created on demand)."""
        path = self.data_dir / "state" / self.component_id.replace("/", "_")
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Output:
    """What a processor returns: batches to pass on now and items it dropped, by reason."""

    batches: list[Batch] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    # Called by the pipeline once ``batches`` are durably handed to every exporter
    # (e.g. a processor deletes the held copies it had persisted).
    on_persisted: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def of(cls, *batches: Batch) -> Output:
        """The batches that hold any item (``Batch.is_empty`` stops at the first item found)."""
        return cls(batches=[b for b in batches if not b.is_empty()])

    def merge(self, other: Output) -> Output:
        self.batches.extend(other.batches)
        if other.dropped:  # (Counter.update is Python code: skipped for the usual nothing dropped)
            self.dropped.update(other.dropped)
        if other.on_persisted:
            self.on_persisted.extend(other.on_persisted)
        return self


class Processor(ABC):
    """Transforms batches of one or more signals.

    Unless it declares ``Capabilities(thread_safe=True)``, ``process`` runs under the
    gateway-wide pipeline lock, so a stateful processor sees items in order and needs no
    locking of its own. A processor that holds items back (tail sampling) returns them later
    from ``poll`` and releases all of them from ``flush`` at shutdown.
    """

    signals: ClassVar[frozenset[Signal]] = frozenset(Signal)
    capabilities: ClassVar[Capabilities] = Capabilities()

    @abstractmethod
    def process(self, batch: Batch) -> Output: ...

    def poll(self, now: float) -> Output:
        """Called periodically (wall clock ``now``); return items whose wait is over."""
        return Output()

    def flush(self) -> Output:
        """Release everything held (shutdown or drain)."""
        return Output()

    def start(self) -> None:
        """Called once in the process that runs the processor, after the pipeline is built and
        before its first batch: start what it needs in the background (worker pools), so its
        memory is taken at start-up rather than at whatever moment the first big batch comes."""

    def answer(self, query: HttpQuery) -> HttpAnswer:
        """Answer a request to one of the declared ``Capabilities.http_routes``. Runs like
        ``process`` (under the pipeline lock unless thread-safe; in the worker, between batches)."""
        return HttpAnswer(404, {"error": f"no route {query.path}"})

    def reload(self) -> None:
        """SIGHUP: re-read the files this processor's settings name (a policy, a list), keeping
        what is in force when the new one does not load. Called where ``process`` runs."""

    def shutdown(self) -> None:
        """Free resources. Called once, after the final flush."""


class ExportStatus(enum.Enum):
    SUCCESS = "success"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class ExportResult:
    status: ExportStatus
    reason: str = ""  # short, PII-free, e.g. "UNAVAILABLE", "HTTP 503", "INVALID_ARGUMENT"
    retry_after: float | None = None  # seconds, from RetryInfo / Retry-After
    rejected_items: int = 0  # OTLP partial_success: items the backend refused permanently

    @classmethod
    def ok(cls, rejected_items: int = 0, reason: str = "") -> ExportResult:
        return cls(ExportStatus.SUCCESS, reason=reason, rejected_items=rejected_items)

    @classmethod
    def retry(cls, reason: str, retry_after: float | None = None) -> ExportResult:
        return cls(ExportStatus.RETRYABLE, reason=reason, retry_after=retry_after)

    @classmethod
    def permanent(cls, reason: str) -> ExportResult:
        return cls(ExportStatus.PERMANENT, reason=reason)


class Exporter(ABC):
    """Sends one batch to a destination. Queueing, retries and the circuit breaker
    are layered around it by the gateway (``errorgate.delivery``), so ``export``
    makes exactly one attempt and says how it went."""

    signals: ClassVar[frozenset[Signal]] = frozenset(Signal)
    capabilities: ClassVar[ExporterCapabilities] = ExporterCapabilities()

    @abstractmethod
    def export(self, batch: Batch, timeout: float) -> ExportResult: ...

    def shutdown(self) -> None:
        """Close connections/files."""


C = TypeVar("C", bound=ComponentConfig)
T = TypeVar("T")


@dataclass(frozen=True)
class Factory(Generic[C, T]):
    """How to build one component type: its config model, a constructor, and the class it
    builds (whose declared ``signals`` and ``capabilities`` the core reads before building)."""

    type_name: str
    config_model: type[C]
    create: Callable[[C, ComponentContext], T]
    component_class: type[T] | None = None


def processor_capabilities(factory: Factory[Any, Processor]) -> Capabilities:
    """What a processor type declares, read before any instance is built (it may be built in
    the processor worker only)."""
    cls = factory.component_class
    return cls.capabilities if cls is not None else Capabilities()


def processor_signals(factory: Factory[Any, Processor]) -> frozenset[Signal]:
    cls = factory.component_class
    return cls.signals if cls is not None else frozenset(Signal)


class RegistryError(ValueError):
    """A distribution lists a component wrongly (an entry point that is not a Factory...)."""


class Registry(Generic[T]):
    """Factories of one kind by type name, loaded once from the entry-point group ``group``
    (the distribution's list, ``pyproject.toml``); ``register`` adds one at run time (tests)."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._factories: dict[str, Factory[Any, T]] = {}
        self._loaded = False

    def register(self, factory: Factory[Any, T]) -> None:
        self._factories[factory.type_name] = factory

    def get(self, type_name: str) -> Factory[Any, T] | None:
        self._load()
        return self._factories.get(type_name)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._factories)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for point in entry_points(group=self.group):
            factory = point.load()
            if not isinstance(factory, Factory) or factory.type_name != point.name:
                raise RegistryError(
                    f"entry point {point.name} = {point.value} in group {self.group} must name a "
                    f"Factory whose type_name is {point.name!r}"
                )
            self._factories.setdefault(point.name, factory)


RECEIVERS: Registry[Any] = Registry("receiver", "errorgate.receivers")
PROCESSORS: Registry[Processor] = Registry("processor", "errorgate.processors")
EXPORTERS: Registry[Exporter] = Registry("exporter", "errorgate.exporters")
EXTENSIONS: Registry[Extension] = Registry("extension", "errorgate.extensions")


def register_processor(
    type_name: str, config_model: type[C], component_class: type[Processor] | None = None
) -> Callable[[Callable[[C, ComponentContext], Processor]], Callable[[C, ComponentContext], Processor]]:
    """Registers a processor at run time (a program embedding errorgate, a test):
    ``@register_processor("mine", MyConfig, MyProcessor)`` on its create function."""

    def deco(
        create: Callable[[C, ComponentContext], Processor],
    ) -> Callable[[C, ComponentContext], Processor]:
        PROCESSORS.register(Factory(type_name, config_model, create, component_class))
        return create

    return deco
