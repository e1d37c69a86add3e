"""dlq on a real redis-server: a poison message is parked at once with its reason, a failing one
after max deliveries, good ones are acknowledged; replay moves parked messages back; the consumer
span joins the producer's trace."""

from __future__ import annotations

import uuid

import pydantic
import pytest
import redis
from errorgate_kit.dlq import Delivery, StreamConsumer, parked, publish, replay
from errorgate_kit.validation import parse
from opentelemetry import trace
from opentelemetry.trace import SpanKind


class Order(pydantic.BaseModel):
    sku: str
    qty: int


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_poison_parked_good_acked_and_trace_joined(spans, client) -> None:
    stream = f"orders-{uuid.uuid4().hex[:6]}"
    done: list[Order] = []
    consumer = StreamConsumer(client, stream, "billing", "b1", lambda d: done.append(parse(Order, d.payload)))
    consumer.ensure_group()
    consumer.ensure_group()  # idempotent
    with trace.get_tracer("t").start_as_current_span("checkout"):
        publish(client, stream, b'{"sku": "A1", "qty": 1}')
        publish(client, stream, b'{"sku": "A1", "qty": "many"}')
    assert consumer.poll() == 2
    assert [o.sku for o in done] == ["A1"]
    dead = parked(client, f"{stream}:dlq")
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["payload"] == b'{"sku": "A1", "qty": "many"}'
    assert b"ValidationError" in fields["dlq.reason"] and b"qty" in fields["dlq.reason"]
    assert client.xpending(stream, "billing")["pending"] == 0  # nothing left unacknowledged
    consumers = [s for s in spans.all() if s.kind is SpanKind.CONSUMER]
    producer = spans.named(f"send {stream}")[0]
    assert {s.context.trace_id for s in consumers} == {producer.context.trace_id}
    bad = next(s for s in consumers if s.status.status_code.name == "ERROR")
    assert bad.attributes["error.type"] == "validation" and bad.attributes["messaging.system"] == "redis"


def test_transient_failure_retried_then_parked_after_max_deliveries_and_replayed(spans, client) -> None:
    stream = f"pay-{uuid.uuid4().hex[:6]}"
    attempts: list[int] = []
    healthy = {"ok": False}

    def handle(d: Delivery) -> None:
        attempts.append(d.deliveries)
        if not healthy["ok"]:
            raise ConnectionError("payments unreachable")

    consumer = StreamConsumer(client, stream, "g", "c1", handle, max_deliveries=3, min_idle_ms=0)
    consumer.ensure_group()
    publish(client, stream, b"charge-1")
    for _ in range(5):
        consumer.poll()
    assert attempts == [1, 2, 3]  # bounded: never a 4th delivery
    (_dlq_id, fields), = parked(client, f"{stream}:dlq")  # fmt: skip
    assert fields["dlq.reason"].startswith(b"max deliveries (3) exceeded; last error: ConnectionError")
    assert fields["dlq.deliveries"] == b"3"
    assert client.xpending(stream, "g")["pending"] == 0
    healthy["ok"] = True
    assert len(replay(client, f"{stream}:dlq")) == 1
    assert parked(client, f"{stream}:dlq") == []
    consumer.poll()
    assert attempts[-1] == 1 and client.xpending(stream, "g")["pending"] == 0


def test_settings_are_checked(client) -> None:
    with pytest.raises(ValueError, match="max_deliveries"):
        StreamConsumer(client, "s", "g", "c", lambda d: None, max_deliveries=0)
