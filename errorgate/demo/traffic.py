"""Simulated services for ``errorgate demo``, built on the real OpenTelemetry SDK.

Topology: frontend → checkout → payments → orders-db-proxy → PostgreSQL, frontend → catalog.
Scenarios over ``SIM_MINUTES`` minutes of service time:
- minutes 3: catalog's cache refuses connections for a moment (transient blip);
- minutes 6–13: the orders database times out, failing payments, checkout and frontend
  (a cascade whose origin is orders-db-proxy; persistent by the end);
- all along: checkout rejects a share of orders with a validation error (persistent,
  deterministic), logged with customer details that must be redacted downstream.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

SIM_MINUTES = 15
NS = 1_000_000_000
SERVICES = {  # name -> (version, protocol its SDK exports with)
    "frontend": ("3.2.0", "http"),
    "checkout": ("2.7.1", "grpc"),
    "payments": ("5.0.3", "grpc"),
    "orders-db-proxy": ("1.9.0", "http"),
    "catalog": ("4.1.0", "grpc"),
}
FIRST_NAMES = ["Ada", "Grace", "Alan", "Barbara", "Edsger", "Margaret"]


class Service:
    def __init__(self, name: str, grpc_endpoint: str, http_endpoint: str) -> None:
        version, protocol = SERVICES[name]
        resource = Resource.create(
            {"service.name": name, "service.version": version, "deployment.environment": "demo"}
        )
        if protocol == "grpc":
            span_exporter: Any = GrpcSpanExporter(endpoint=grpc_endpoint, insecure=True)
            log_exporter: Any = GrpcLogExporter(endpoint=grpc_endpoint, insecure=True)
        else:
            span_exporter = HttpSpanExporter(endpoint=f"http://{http_endpoint}/v1/traces")
            log_exporter = HttpLogExporter(endpoint=f"http://{http_endpoint}/v1/logs")
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, schedule_delay_millis=200))
        self.tracer = self.tracer_provider.get_tracer("errorgate.demo")
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(log_exporter, schedule_delay_millis=200)
        )
        self.logger = self.logger_provider.get_logger("errorgate.demo")
        self.metric_reader = InMemoryMetricReader()
        self.metric_exporter = GrpcMetricExporter(endpoint=grpc_endpoint, insecure=True)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.metric_reader])
        self.requests = self.meter_provider.get_meter("errorgate.demo").create_counter(
            "demo.requests", unit="1"
        )

    def export_metrics(self) -> int:
        data = self.metric_reader.get_metrics_data()
        if data is None:
            return 0
        self.metric_exporter.export(data)
        return sum(
            len(m.data.data_points)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        )

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()
        self.metric_exporter.shutdown()


class TrafficSimulator:
    def __init__(self, grpc_endpoint: str, http_endpoint: str, rng: random.Random) -> None:
        import time

        self.rng = rng
        self.services = {name: Service(name, grpc_endpoint, http_endpoint) for name in SERVICES}
        self.sent: Counter[str] = Counter()
        self.by_service: Counter[str] = Counter()
        # Replay ends "now": the gateway sees timestamps of the last SIM_MINUTES minutes.
        self.base_ns = int(time.time() * NS) - SIM_MINUTES * 60 * NS

    # ----------------------------------------------------------------- one minute

    def run_minute(self, minute: int) -> None:
        t0 = self.base_ns + minute * 60 * NS
        for i in range(40):
            at = t0 + int(i * 1.5 * NS)
            self._browse(at, cache_down=(minute == 3 and i < 12))
            if i % 2 == 0:
                self._checkout(at + NS // 2, db_down=(6 <= minute <= 13), invalid=(i % 10 == 0))
        for svc in self.services.values():
            svc.requests.add(40, {"route": "/"})
            self.sent["metric_points"] += svc.export_metrics()

    def _span(
        self, service: str, name: str, kind: SpanKind, start: int, parent: Context | None
    ) -> trace.Span:
        self.sent["spans"] += 1
        self.by_service[service] += 1
        return self.services[service].tracer.start_span(name, context=parent, kind=kind, start_time=start)

    def _log(self, service: str, at: int, severity: str, body: str, span: trace.Span | None) -> None:
        from opentelemetry._logs import SeverityNumber

        number = {"INFO": SeverityNumber.INFO, "WARN": SeverityNumber.WARN, "ERROR": SeverityNumber.ERROR}[
            severity
        ]
        self.services[service].logger.emit(
            timestamp=at,
            context=trace.set_span_in_context(span) if span is not None else None,
            severity_text=severity,
            severity_number=number,
            body=body,
            attributes={"code.function": "handle"},
        )
        self.sent["logs"] += 1

    def _browse(self, at: int, cache_down: bool) -> None:
        root = self._span("frontend", "GET /products", SpanKind.SERVER, at, None)
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.route", "/products")
        root.set_attribute("client.address", f"198.51.100.{self.rng.randint(2, 250)}")
        ctx = trace.set_span_in_context(root)
        call = self._span("frontend", "GET", SpanKind.CLIENT, at + 1_000_000, ctx)
        call.set_attribute("server.address", "catalog")
        server = self._span(
            "catalog", "GET /api/products", SpanKind.SERVER, at + 2_000_000, trace.set_span_in_context(call)
        )
        server.set_attribute("http.route", "/api/products")
        end = at + 30_000_000
        if cache_down:
            cache = self._span(
                "catalog", "GET", SpanKind.CLIENT, at + 3_000_000, trace.set_span_in_context(server)
            )
            cache.set_attribute("db.system", "redis")
            cache.set_attribute("server.address", "cache.internal")
            cache.set_attribute("error.type", "ConnectionRefusedError")
            cache.set_status(Status(StatusCode.ERROR, "connection refused to cache.internal:6379"))
            cache.end(end_time=at + 4_000_000)
            server.set_attribute("http.response.status_code", 503)
            server.set_status(Status(StatusCode.ERROR, "cache unavailable"))
            call.set_attribute("http.response.status_code", 503)
            call.set_status(Status(StatusCode.ERROR))
            root.set_attribute("http.response.status_code", 503)
            root.set_status(Status(StatusCode.ERROR))
            self._log(
                "catalog",
                at + 4_000_000,
                "ERROR",
                "connection refused to cache.internal:6379 after 2 retries",
                cache,
            )
        else:
            server.set_attribute("http.response.status_code", 200)
            root.set_attribute("http.response.status_code", 200)
        for s, t in ((server, end - 2_000_000), (call, end - 1_000_000), (root, end)):
            s.end(end_time=t)

    def _checkout(self, at: int, db_down: bool, invalid: bool) -> None:
        customer = self.rng.choice(FIRST_NAMES)
        email = f"{customer.lower()}.{self.rng.randint(10, 99)}@example.com"
        root = self._span("frontend", "POST /checkout", SpanKind.SERVER, at, None)
        root.set_attribute("http.route", "/checkout")
        root.set_attribute("client.address", f"203.0.113.{self.rng.randint(2, 250)}")
        chk = self._span(
            "checkout", "POST /api/orders", SpanKind.SERVER, at + 1_000_000, trace.set_span_in_context(root)
        )
        chk.set_attribute("http.route", "/api/orders")
        end = at + 80_000_000
        spans = [(chk, end - 3_000_000), (root, end)]
        if invalid:
            chk.set_attribute("http.response.status_code", 400)
            chk.set_attribute("error.type", "ValidationError")
            chk.set_status(Status(StatusCode.ERROR, "card number rejected by issuer"))
            root.set_attribute("http.response.status_code", 400)
            self._log(
                "checkout",
                at + 2_000_000,
                "ERROR",
                f"order rejected for {email}: card 4111 1111 1111 1111 failed the issuer's checks",
                chk,
            )
        else:
            pay = self._span(
                "payments", "Charge", SpanKind.SERVER, at + 5_000_000, trace.set_span_in_context(chk)
            )
            pay.set_attribute("rpc.system", "grpc")
            pay.set_attribute("rpc.service", "payments.Payments")
            proxy = self._span(
                "orders-db-proxy",
                "INSERT orders",
                SpanKind.SERVER,
                at + 8_000_000,
                trace.set_span_in_context(pay),
            )
            db = self._span(
                "orders-db-proxy",
                "INSERT orders",
                SpanKind.CLIENT,
                at + 9_000_000,
                trace.set_span_in_context(proxy),
            )
            db.set_attribute("db.system", "postgresql")
            db.set_attribute("db.query.text", "INSERT INTO orders VALUES ($1, $2)")
            db.set_attribute("server.address", "orders-db.internal")
            spans[:0] = [(db, end - 20_000_000), (proxy, end - 15_000_000), (pay, end - 10_000_000)]
            if db_down:
                db.set_attribute("error.type", "TimeoutError")
                db.set_status(
                    Status(StatusCode.ERROR, "timeout after 5000ms waiting for orders-db.internal:5432")
                )
                for s, status in ((proxy, 504), (chk, 502), (root, 502)):
                    s.set_attribute("http.response.status_code", status)
                    s.set_status(Status(StatusCode.ERROR, f"upstream failed with {status}"))
                pay.set_attribute("rpc.grpc.status_code", 14)
                pay.set_status(Status(StatusCode.ERROR, "orders store unavailable"))
                self._log(
                    "payments",
                    at + 60_000_000,
                    "ERROR",
                    f"charge failed for {email}: orders store unavailable",
                    pay,
                )
            else:
                for s in (proxy, chk, root):
                    s.set_attribute("http.response.status_code", 200)
                self._log(
                    "checkout", at + 70_000_000, "INFO", f"order confirmed, receipt sent to {email}", chk
                )
        for s, t in spans:
            s.end(end_time=t)

    def shutdown(self) -> None:
        for svc in self.services.values():
            svc.tracer_provider.force_flush()
            svc.logger_provider.force_flush()
        for svc in self.services.values():
            svc.shutdown()
