"""Where decoded requests enter the gateway (receivers call ``Intake.accept``).

Owned by the core. Receivers depend only on this Protocol and ``errorgate.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from errorgate.signals import ExportRequest, Signal


@dataclass(frozen=True)
class AcceptResult:
    """Maps onto OTLP ``partial_success``: items refused individually and why (PII-free)."""

    rejected_items: int = 0
    error_message: str = ""


class Intake(Protocol):
    def accept(
        self, signal: Signal, request: ExportRequest | None, *, raw: bytes | None, receiver: str
    ) -> AcceptResult:
        """Validate, de-duplicate, process and hand ``request`` to the exporters' queues.

        ``request`` None: the receiver did not decode it; ``raw`` (plain bytes, within the
        receiver's request limits) is its protobuf body, decoded by the intake only if something
        needs the decoded form. A body that does not decode raises ``InvalidRequest`` with a
        PII-free message, as the receiver's own decoding does.

        Returns once every accepted item is durably queued (or dead-lettered), i.e. when it
        is safe to acknowledge. ``raw`` is the undecoded body, used for duplicate detection: plain
        ``bytes`` means the protobuf encoding of ``request`` (which may then be forwarded as is when
        nothing changes it); a ``bytes`` subclass (``receiver.common.OtherEncoding``) is another
        encoding such as OTLP/JSON, used for duplicate detection only.
        Raises ``Backpressure`` (nothing accepted, retry later) or ``ProcessingFailed``
        (a processor raised; the batch was dead-lettered).
        """
        ...

    def readiness(self) -> tuple[str, dict[str, object]]:
        """("pass"|"warn"|"fail", details) for /readyz and the gRPC health service."""
        ...
