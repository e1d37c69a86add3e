"""Exceptions that cross the receiver/pipeline boundary and map onto OTLP status codes."""

from __future__ import annotations


class Backpressure(Exception):
    """The gateway cannot accept data now (queue full, shutting down): gRPC UNAVAILABLE with
    RetryInfo, HTTP 503 with Retry-After. Nothing of the request was accepted."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailable(Backpressure):
    """Data could not be made durable (disk below ``service.disk.min_free_mib``, or a write
    failed): nothing was acknowledged, the client retries. gRPC UNAVAILABLE / HTTP 503."""


class LimitExceeded(Exception):
    """The request breaks a configured limit (size, items, nesting...): gRPC RESOURCE_EXHAUSTED /
    HTTP 413. The message names the limit's config key; nothing of the request was accepted."""


class ProcessingFailed(Exception):
    """A processor raised on the batch; the batch was dead-lettered. gRPC INTERNAL / HTTP 500
    (not retryable: the data is safe in the dead-letter store, replay it from there)."""


class InvalidRequest(Exception):
    """The request as a whole is malformed: gRPC INVALID_ARGUMENT / HTTP 400."""


def raised_at(error: BaseException) -> str:
    """``file:line`` where ``error`` was raised: what errorgate logs about a failing processor
    instead of the exception text, which may quote telemetry values (PII)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
