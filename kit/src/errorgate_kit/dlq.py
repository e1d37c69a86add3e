"""Dead-letter handling on Redis Streams: consumer groups, max deliveries, poison parking, replay.

A message is a stream entry: ``payload`` plus the trace context and correlation id
(``publish`` adds them). ``StreamConsumer.poll`` hands each entry to the handler inside a
CONSUMER span (child of the producer's trace). Success acknowledges it. A ``ValidationError``
(or another ``poison`` type) parks it at once: a bad message fails the same way every time.
Other errors leave it pending; after ``min_idle_ms`` it is claimed again, and once delivered
``max_deliveries`` times it is parked with the last error as the reason. Parking is one
MULTI/EXEC (copy to ``<stream>:dlq`` with ``dlq.*`` fields, XACK), so a message is never both
lost and unacknowledged; ``replay`` moves parked messages back the same way::

    consumer = StreamConsumer(redis.Redis(), "orders", "billing", "billing-1", handle, max_deliveries=5)
    consumer.ensure_group()
    while True:
        consumer.poll(block_ms=1000)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from opentelemetry.trace import SpanKind

from errorgate_kit import correlation
from errorgate_kit._otel import record_error, tracer
from errorgate_kit.validation import ValidationError

PAYLOAD = "payload"


@dataclass(frozen=True)
class Delivery:
    id: str
    payload: bytes
    fields: dict[str, str]
    deliveries: int


def publish(client: redis.Redis, stream: str, payload: bytes | str, maxlen: int | None = None) -> str:
    """Add a message to ``stream`` in a PRODUCER span, with trace context headers; returns its id."""
    with tracer().start_as_current_span(f"send {stream}", kind=SpanKind.PRODUCER) as span:
        span.set_attributes({"messaging.system": "redis", "messaging.destination.name": stream})
        fields: dict[str, Any] = {PAYLOAD: payload}
        correlation.inject_message(fields)
        msg_id = _untyped(client).xadd(stream, fields, maxlen=maxlen, approximate=True)
        text = msg_id.decode() if isinstance(msg_id, bytes) else str(msg_id)
        span.set_attribute("messaging.message.id", text)
        return text


def _text(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items() if k != PAYLOAD.encode()}


class StreamConsumer:
    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        handler: Callable[[Delivery], None],
        *,
        max_deliveries: int = 5,
        min_idle_ms: int = 30_000,
        dead_letter_stream: str | None = None,
        poison: tuple[type[BaseException], ...] = (ValidationError,),
    ) -> None:
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {max_deliveries}")
        # redis-py's reply types are unions of every decode mode: read as Any, shapes checked by tests.
        self.client: Any = client
        self.stream, self.group, self.consumer = stream, group, consumer
        self.handler, self.max_deliveries, self.min_idle_ms = handler, max_deliveries, min_idle_ms
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dlq"
        self.poison = poison
        self._errors = f"{stream}:{group}:last-error"  # message id -> last error, for the park reason

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def poll(self, count: int = 10, block_ms: int | None = None) -> int:
        """Handle stale pending messages, then new ones; returns how many were handed out or parked."""
        done = self._reclaim(count)
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        for _, entries in reply or []:
            for msg_id, fields in entries:
                self._handle(msg_id.decode(), fields, 1)
                done += 1
        return done

    def _reclaim(self, count: int) -> int:
        stale = self.client.xpending_range(
            self.stream, self.group, min="-", max="+", count=count, idle=self.min_idle_ms
        )
        done = 0
        for entry in stale:
            msg_id = entry["message_id"].decode()
            claimed = self.client.xclaim(self.stream, self.group, self.consumer, self.min_idle_ms, [msg_id])
            if not claimed or claimed[0][1] is None:
                continue  # deleted from the stream meanwhile, or taken by another consumer
            deliveries = int(entry["times_delivered"]) + 1
            _, fields = claimed[0]
            if deliveries > self.max_deliveries:
                last = self.client.hget(self._errors, msg_id)
                reason = f"max deliveries ({self.max_deliveries}) exceeded; last error: "
                reason += last.decode() if last else "unknown"
                self.park(msg_id, fields, reason, deliveries - 1)
            else:
                self._handle(msg_id, fields, deliveries)
            done += 1
        return done

    def _handle(self, msg_id: str, fields: Mapping[bytes, bytes], deliveries: int) -> None:
        headers = _text(fields)
        delivery = Delivery(msg_id, fields.get(PAYLOAD.encode(), b""), headers, deliveries)
        attrs: dict[str, str | int] = {
            "messaging.system": "redis",
            "messaging.destination.name": self.stream,
            "messaging.consumer.group.name": self.group,
            "messaging.operation.type": "process",
            "messaging.message.id": msg_id,
            "messaging.message.delivery_count": deliveries,
        }
        with (
            correlation.attached(correlation.extract_message(headers)),
            tracer().start_as_current_span(
                f"process {self.stream}",
                kind=SpanKind.CONSUMER,
                attributes=attrs,
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
        ):
            try:
                self.handler(delivery)
            except Exception as exc:
                record_error(span, exc, "validation" if isinstance(exc, ValidationError) else None)
                reason = f"{type(exc).__qualname__}: {exc}"[:1000]
                if isinstance(exc, self.poison):
                    span.add_event("dlq.parked", {"dlq.reason": reason})
                    self.park(msg_id, fields, reason, deliveries)
                else:
                    self.client.hset(self._errors, msg_id, reason)  # stays pending: claimed again later
                return
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.stream, self.group, msg_id)
            pipe.hdel(self._errors, msg_id)
            pipe.execute()

    def park(self, msg_id: str, fields: Mapping[bytes, bytes], reason: str, deliveries: int) -> None:
        parked = dict(fields)
        parked.update(
            {
                b"dlq.reason": reason.encode(),
                b"dlq.source_stream": self.stream.encode(),
                b"dlq.source_id": msg_id.encode(),
                b"dlq.deliveries": str(deliveries).encode(),
            }
        )
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, parked)  # type: ignore[arg-type]
        pipe.xack(self.stream, self.group, msg_id)
        pipe.hdel(self._errors, msg_id)
        pipe.execute()


def parked(client: redis.Redis, dead_letter_stream: str) -> list[tuple[str, dict[str, bytes]]]:
    """Every parked message: (id in the DLQ, fields including ``dlq.reason``)."""
    entries = _untyped(client).xrange(dead_letter_stream)
    return [(i.decode(), {k.decode(): v for k, v in f.items()}) for i, f in entries]


def _untyped(client: redis.Redis) -> Any:
    return client


def replay(client: redis.Redis, dead_letter_stream: str, ids: list[str] | None = None) -> list[str]:
    """Move parked messages (all, or ``ids``) back to their source stream; returns their new ids."""
    new_ids = []
    client = _untyped(client)
    for dlq_id, fields in parked(client, dead_letter_stream):
        if ids is not None and dlq_id not in ids:
            continue
        source = fields["dlq.source_stream"].decode()
        original = {k: v for k, v in fields.items() if not k.startswith("dlq.")}
        pipe = client.pipeline(transaction=True)
        pipe.xadd(source, original)  # type: ignore[arg-type]
        pipe.xdel(dead_letter_stream, dlq_id)
        new_id, _ = pipe.execute()
        new_ids.append(new_id.decode())
    return new_ids
