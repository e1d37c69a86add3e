"""Correlation ids and context propagation for HTTP headers, gRPC metadata and message headers.

W3C ``traceparent``/``tracestate`` and ``baggage`` go through the globally configured OpenTelemetry
propagator; the correlation id is the baggage entry ``correlation.id`` (also sent as
``x-correlation-id`` for peers that do not read baggage). Header names are matched
case-insensitively, so a dict of raw HTTP or message headers works as a carrier.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from opentelemetry import baggage, context, propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from errorgate_kit import deadline

BAGGAGE_KEY = "correlation.id"
HEADER = "x-correlation-id"
MAX_ID_LENGTH = 128  # a peer's id is copied into every item: bounded


class _CaseInsensitive(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        wanted = key.lower()
        found = [v for k, v in carrier.items() if k.lower() == wanted]
        return found or None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return [k.lower() for k in carrier]


_GETTER = _CaseInsensitive()


def correlation_id(ctx: Context | None = None) -> str | None:
    value = baggage.get_baggage(BAGGAGE_KEY, ctx)
    return None if value is None else str(value)


def ensure_correlation_id(ctx: Context | None = None, incoming: str | None = None) -> Context:
    """A context with a correlation id: the one already in baggage, else ``incoming`` (a peer's
    ``x-correlation-id``, if printable and short), else a new UUID."""
    if correlation_id(ctx) is not None:
        return ctx if ctx is not None else context.get_current()
    value = incoming if incoming and len(incoming) <= MAX_ID_LENGTH and incoming.isprintable() else None
    return baggage.set_baggage(BAGGAGE_KEY, value or uuid.uuid4().hex, ctx)


def inject_http(headers: MutableMapping[str, str], ctx: Context | None = None) -> MutableMapping[str, str]:
    """Add ``traceparent``, ``tracestate``, ``baggage`` (with correlation id and deadline) and
    ``x-correlation-id`` to outgoing HTTP headers; returns them."""
    propagate.inject(headers, context=ctx)
    cid = correlation_id(ctx)
    if cid is not None:
        headers[HEADER] = cid
    return headers


def extract_http(headers: Mapping[str, str], ctx: Context | None = None) -> Context:
    """The context an incoming request carries, with a correlation id guaranteed."""
    extracted = propagate.extract(headers, context=ctx, getter=_GETTER)
    incoming = _GETTER.get(headers, HEADER)
    return ensure_correlation_id(extracted, incoming[0] if incoming else None)


# Message headers (AMQP headers, Redis stream fields, Kafka headers) are text maps like HTTP's.
inject_message = inject_http
extract_message = extract_http


def inject_grpc(metadata: list[tuple[str, str]], ctx: Context | None = None) -> list[tuple[str, str]]:
    """Outgoing gRPC metadata (lower-case keys), plus ``grpc-timeout`` for the deadline."""
    carrier: dict[str, str] = {}
    inject_http(carrier, ctx)
    metadata.extend((k.lower(), v) for k, v in carrier.items())
    timeout = deadline.grpc_timeout(ctx)
    if timeout is not None:
        metadata.append(("grpc-timeout", timeout))
    return metadata


def extract_grpc(metadata: Iterable[tuple[str, str | bytes]], ctx: Context | None = None) -> Context:
    """The context incoming gRPC metadata carries; a ``grpc-timeout`` sets (or shortens) the deadline."""
    carrier = {k: v for k, v in metadata if isinstance(v, str)}  # binary (-bin) entries carry no context
    extracted = extract_http(carrier, ctx)
    timeout = carrier.get("grpc-timeout")
    if timeout is not None:
        extracted = deadline.with_deadline(deadline.parse_grpc_timeout(timeout), extracted)
    return extracted


@contextmanager
def attached(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` current for the block (the extract side of a handler)."""
    token = context.attach(ctx)
    try:
        yield ctx
    finally:
        context.detach(token)
