"""Synthetic request traffic per (service, version) for deploy-verdict and routing-health tests:
one SERVER root span per request, failures at a given rate, sent to a real gateway over OTLP/gRPC."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from errorgate.attributes import set_value

_ids = itertools.count(1)


@dataclass
class Traffic:
    service: str
    version: str
    requests: int
    fail_every: int = 0  # one failure (HTTP 500) per this many requests; 0 = none
    extra_failures: int = 0  # requests that fail with an error no other version has
    extra_every: int = 0  # fail the extra error every Nth request (default: spread evenly)
    latency: float = 0.05  # seconds
    fail_per_100: int = 0  # failures per hundred requests (overrides fail_every)
    span: float = 60.0  # seconds of telemetry time the requests are spread over, ending now
    status_code: int = 500  # of the failures (500: a persistent kind soon; 503: transient)


def _request(t: Traffic) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    set_value(rs.resource.attributes, "service.name", t.service)
    set_value(rs.resource.attributes, "service.version", t.version)
    spans = rs.scope_spans.add().spans
    end0 = time.time() - t.span
    extra_every = t.extra_every or (t.requests // t.extra_failures if t.extra_failures else 0)
    extras = 0
    for i in range(t.requests):
        n = next(_ids)
        end = end0 + t.span * i / t.requests
        s = spans.add(
            trace_id=n.to_bytes(16, "big"),
            span_id=n.to_bytes(8, "big"),
            name="GET /items",
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=int((end - t.latency) * 1e9),
            end_time_unix_nano=int(end * 1e9),
        )
        set_value(s.attributes, "http.route", "/items")
        failing = (
            (i % 100) < t.fail_per_100 if t.fail_per_100 else bool(t.fail_every and i % t.fail_every == 0)
        )
        if extra_every and extras < t.extra_failures and i % extra_every == extra_every // 2:
            extras += 1
            s.status.code = Status.STATUS_CODE_ERROR
            event = s.events.add(name="exception", time_unix_nano=s.end_time_unix_nano)
            set_value(event.attributes, "exception.type", "KeyError")
            set_value(event.attributes, "exception.message", "missing field sku in cart line")
        elif failing:
            s.status.code = Status.STATUS_CODE_ERROR
            set_value(s.attributes, "http.response.status_code", t.status_code)
    return req


def send(endpoint: str, *traffic: Traffic) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        call = ch.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for t in traffic:
            call(_request(t).SerializeToString(), timeout=30)
