"""The demo shop: three services on errorgate-kit sending OTLP to errorgate.

- ``orders`` (HTTP, WSGI): ``POST /orders`` validates the order, asks ``inventory`` for stock
  through a retry policy and a circuit breaker (deadline in baggage), publishes an order event to
  the Redis stream ``orders``; Idempotency-Key makes client retries safe.
- ``inventory`` (HTTP): ``GET /stock/<sku>`` reads its stock database (a Redis, ``stock-db``).
  ``POST /chaos/flaky?n=N`` sheds the next N requests with 503 before they reach the
  instrumented handler (like an overloaded proxy), for retried-then-succeeded calls.
- ``billing`` (queue consumer): validates each order event; bad ones go to ``orders:dlq``.

Run each: ``python kit/demo/shop.py ROLE --port P --otlp 127.0.0.1:4317 --redis redis://… …``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pydantic
import redis
from checkout import checkout_app  # the sibling module: shop.py runs as a script
from errorgate_kit import correlation, deadline, dlq
from errorgate_kit._otel import record_error
from errorgate_kit.breaker import CircuitBreaker, CircuitBreakerOpen
from errorgate_kit.idempotency import WSGIIdempotencyMiddleware
from errorgate_kit.retry import RetryPolicy, raise_for_status
from errorgate_kit.validation import ValidationError, parse, validated
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Order(pydantic.BaseModel):
    sku: str = pydantic.Field(min_length=1, max_length=64)
    qty: int = pydantic.Field(gt=0, le=100)


def setup_otel(service: str, endpoint: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    return provider


def traced(route_of: Callable[[str], str], app: WSGIApp) -> WSGIApp:
    """A SERVER span per request in the caller's trace (context, baggage and deadline extracted)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        method, route = environ["REQUEST_METHOD"], route_of(environ.get("PATH_INFO", ""))
        with (
            correlation.attached(correlation.extract_http(headers)),
            trace.get_tracer("shop").start_as_current_span(f"{method} {route}", kind=SpanKind.SERVER) as span,
        ):
            span.set_attributes({"http.request.method": method, "http.route": route})

            def start(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> Any:
                span.set_attribute("http.response.status_code", int(status.split()[0]))
                return start_response(status, hdrs, exc_info)

            return list(app(environ, start))

    return wrapped


def respond(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    start_response(status, [("content-type", "application/json")])
    return [json.dumps(body).encode()]


def orders_app(
    inventory: str,
    stream_client: redis.Redis,
    *,
    use_breaker: bool = True,
    use_idempotency: bool = True,
    saga_db: str = "sqlite:///:memory:",
) -> WSGIApp:
    policy = RetryPolicy(max_attempts=4, initial=0.05, max_backoff=0.5, jitter="decorrelated")
    breaker = CircuitBreaker("inventory", window_size=20, minimum_calls=10, open_duration=5)

    def through_breaker(sku: str) -> int:
        kwargs: dict[str, Any] = {"span_name": "GET /stock", "attributes": {"peer.service": "inventory"}}
        if not use_breaker:  # --no-breaker: the chaos suite shows its hypothesis fails without one
            return policy.call(get_stock, sku, **kwargs)
        return breaker.call(policy.call, get_stock, sku, **kwargs)

    def get_stock(sku: str) -> int:
        request = urllib.request.Request(f"{inventory}/stock/{sku}", headers=correlation.inject_http({}))
        try:
            with urllib.request.urlopen(request, timeout=deadline.timeout_for(2.0)) as r:
                return int(json.loads(r.read())["stock"])
        except urllib.error.HTTPError as e:
            raise_for_status(e.code, dict(e.headers.items()))
            raise

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            order = parse(Order, body, max_bytes=4096)
        except ValidationError as e:
            return respond(start_response, "422 Unprocessable Content", {"error": str(e)})
        with deadline.budget(3.0):
            try:
                stock = through_breaker(order.sku)
            except CircuitBreakerOpen:
                # The fallback: answer at once (no call to inventory) and say when to come back.
                start_response(
                    "503 Service Unavailable",
                    [("content-type", "application/json"), ("retry-after", str(int(breaker.open_duration)))],
                )
                return [json.dumps({"error": "inventory unavailable", "fallback": "circuit open"}).encode()]
            except Exception as exc:
                record_error(trace.get_current_span(), exc)
                return respond(start_response, "503 Service Unavailable", {"error": "inventory unavailable"})
        if stock < order.qty:
            return respond(start_response, "409 Conflict", {"error": "out of stock"})
        msg_id = dlq.publish(stream_client, "orders", order.model_dump_json())
        return respond(start_response, "201 Created", {"order": msg_id})

    # --no-idempotency: the chaos suite's control run shows duplicate orders without it.
    ordering = traced(lambda path: "/orders", WSGIIdempotencyMiddleware(app) if use_idempotency else app)
    stats: dict[str, Callable[[], object]] = {
        "breaker": lambda: breaker.state.value if use_breaker else "disabled"
    }
    saga = traced(lambda path: path, checkout_app(stream_client, saga_db))

    def routed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in ("/checkout", "/_admin/fail-step"):
            return saga(environ, start_response)
        return ordering(environ, start_response)

    return admin_routes(stats, routed)


def admin_routes(stats: dict[str, Callable[[], object]], app: WSGIApp) -> WSGIApp:
    """``GET /_admin/stats``: what the chaos probes read (breaker state, request counts)."""

    def routed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/_admin/stats":
            return respond(start_response, "200 OK", {k: f() for k, f in stats.items()})
        return app(environ, start_response)

    return routed


STOCK_DB_TIMEOUT = 0.5  # inventory's socket timeouts on stock-db: the longest one call can take


def inventory_app(stock_db: redis.Redis, stock_db_timeout: float = STOCK_DB_TIMEOUT) -> WSGIApp:
    """``stock_db_timeout``: the client's socket timeout; a call is made only with that much time
    left before the caller's deadline, since a hung stock-db would otherwise hold the answer
    until the timeout, past the deadline."""
    shed = {"n": 0}
    seen = {"requests": 0}  # every stock request that reached this process: the herd counter
    lock = threading.Lock()

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sku = environ.get("PATH_INFO", "").rsplit("/", 1)[-1]
        left = deadline.remaining()
        if left is not None and left < stock_db_timeout:
            # On inventory's own span: no stock-db span, since stock-db was not called (nor at fault).
            exc = deadline.DeadlineExceeded("deadline exceeded before the stock-db call")
            record_error(trace.get_current_span(), exc)
            return respond(start_response, "504 Gateway Timeout", {"error": str(exc)})
        with trace.get_tracer("shop").start_as_current_span("GET stock", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {"peer.service": "stock-db", "db.system.name": "redis", "db.operation.name": "GET"}
            )
            try:
                value = stock_db.get(f"stock:{sku}")
            except redis.RedisError as exc:
                record_error(span, exc)
                return respond(start_response, "503 Service Unavailable", {"error": "stock-db unavailable"})
        return respond(start_response, "200 OK", {"stock": int(value or 0)})

    served = traced(lambda path: "/stock/{sku}", handle)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/chaos/flaky":
            with lock:
                shed["n"] = int(environ.get("QUERY_STRING", "n=1").partition("=")[2] or 1)
            return respond(start_response, "200 OK", {"shedding": shed["n"]})
        if environ.get("PATH_INFO") == "/_admin/stats":
            with lock:
                return respond(start_response, "200 OK", dict(seen))
        with lock:
            seen["requests"] += 1
            shedding = shed["n"] > 0
            shed["n"] -= shedding
        if shedding:  # before the instrumented handler: the caller's client span has no server child
            start_response("503 Service Unavailable", [("retry-after", "0")])
            return [b"overloaded"]
        return served(environ, start_response)

    return app


def run_billing(client: redis.Redis, stop: threading.Event) -> None:
    @validated(Order, max_bytes=4096)
    def charge(order: Order) -> None:
        client.rpush("charges", order.model_dump_json())

    consumer = dlq.StreamConsumer(client, "orders", "billing", "billing-1", lambda d: charge(d.payload))
    consumer.ensure_group()
    while not stop.is_set():
        consumer.poll(block_ms=200)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of 8 concurrent callers had SYNs
    # dropped and retransmitted a second later, so calls missed 1 s deadlines with nothing wrong.
    request_queue_size = 128


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("role", choices=["orders", "inventory", "billing"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--otlp", default="127.0.0.1:4317")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the queue (orders, billing)")
    p.add_argument("--stock-db", default="redis://127.0.0.1:6380/0", help="inventory's database")
    p.add_argument("--inventory", default="http://127.0.0.1:8081")
    p.add_argument("--no-breaker", action="store_true", help="orders calls inventory without a breaker")
    p.add_argument("--no-idempotency", action="store_true", help="orders ignores Idempotency-Key")
    args = p.parse_args(argv)
    provider = setup_otel(args.role, args.otlp)
    stop = threading.Event()

    def shutdown(*_: object) -> None:
        stop.set()
        provider.shutdown()  # flushes the spans still batched
        sys.exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    queue = redis.Redis.from_url(args.redis, socket_timeout=2)
    if args.role == "billing":
        run_billing(queue, stop)
        return
    timeouts = {"socket_timeout": STOCK_DB_TIMEOUT, "socket_connect_timeout": STOCK_DB_TIMEOUT}
    app = (
        orders_app(
            args.inventory, queue, use_breaker=not args.no_breaker, use_idempotency=not args.no_idempotency
        )
        if args.role == "orders"
        else inventory_app(redis.Redis.from_url(args.stock_db, **timeouts))
    )
    make_server("127.0.0.1", args.port, app, server_class=_Server, handler_class=_Quiet).serve_forever()


if __name__ == "__main__":
    main()
