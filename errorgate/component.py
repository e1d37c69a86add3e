"""Component interfaces and the registry that maps config type names to factories.

A processor transforms a batch; an exporter exports one; both shut down cleanly.
Each component module defines a pydantic config model, its class, and registers
a factory under its type name (the part before ``/`` in a component id).
"""

from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from errorgate.signals import Batch, Signal

if TYPE_CHECKING:
    from errorgate.telemetry import Telemetry


class ComponentConfig(BaseModel):
    """Base for every component's settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


@dataclass
class ComponentContext:
    """What the gateway hands a component when it builds it."""

    component_id: str  # e.g. "otlp/backup"
    data_dir: Path
    telemetry: Telemetry
    logger: logging.Logger
    # Shared services by name (service catalog, keyring, hold stores...). Looked up with ``service``.
    services: dict[str, object] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return self.component_id.split("/", 1)[0]

    def service(self, name: str) -> object | None:
        return self.services.get(name)

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

    ``process`` runs under the pipeline lock, so stateful processors see items in
    order and need no locking of their own. A processor that holds items back
    (tail sampling) returns them later from ``poll`` and releases all of them
    from ``flush`` at shutdown.
    """

    signals: ClassVar[frozenset[Signal]] = frozenset(Signal)

    @abstractmethod
    def process(self, batch: Batch) -> Output: ...

    def poll(self, now: float) -> Output:
        """Called periodically (wall clock ``now``); return items whose wait is over."""
        return Output()

    def flush(self) -> Output:
        """Release everything held (shutdown or drain)."""
        return Output()

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
    are layered around it by the gateway (``errorgate.delivery.exporter``), so ``export``
    makes exactly one attempt and says how it went."""

    signals: ClassVar[frozenset[Signal]] = frozenset(Signal)

    @abstractmethod
    def export(self, batch: Batch, timeout: float) -> ExportResult: ...

    def shutdown(self) -> None:
        """Close connections/files."""


C = TypeVar("C", bound=ComponentConfig)
T = TypeVar("T")


@dataclass(frozen=True)
class Factory(Generic[C, T]):
    type_name: str
    config_model: type[C]
    create: Callable[[C, ComponentContext], T]


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Factory[ComponentConfig, T]] = {}

    def register(
        self, type_name: str, config_model: type[C], create: Callable[[C, ComponentContext], T]
    ) -> None:
        self._factories[type_name] = Factory(type_name, config_model, create)  # type: ignore[arg-type]

    def get(self, type_name: str) -> Factory[ComponentConfig, T] | None:
        return self._factories.get(type_name)

    def names(self) -> list[str]:
        return sorted(self._factories)


PROCESSORS: Registry[Processor] = Registry("processor")
EXPORTERS: Registry[Exporter] = Registry("exporter")


def register_processor(
    type_name: str, config_model: type[C]
) -> Callable[[Callable[[C, ComponentContext], Processor]], Callable[[C, ComponentContext], Processor]]:
    """Decorator for a processor factory: ``@register_processor("sample", SampleConfig)``."""

    def deco(
        create: Callable[[C, ComponentContext], Processor],
    ) -> Callable[[C, ComponentContext], Processor]:
        PROCESSORS.register(type_name, config_model, create)
        return create

    return deco


def register_exporter(
    type_name: str, config_model: type[C]
) -> Callable[[Callable[[C, ComponentContext], Exporter]], Callable[[C, ComponentContext], Exporter]]:
    def deco(create: Callable[[C, ComponentContext], Exporter]) -> Callable[[C, ComponentContext], Exporter]:
        EXPORTERS.register(type_name, config_model, create)
        return create

    return deco


def load_builtin_components() -> None:
    """Import the component packages so their factories register themselves."""
    import errorgate.exporters
    import errorgate.processors  # noqa: F401
