"""Per-item validation of decoded OTLP requests (OTLP ``partial_success``).

``validate_request`` runs on every item the gateway receives, so the common case
(nothing wrong) is a single pass with cheap checks first: lengths before
recursion, and only nested values are walked. Reasons are short, fixed phrases
plus sizes; they never quote telemetry values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.intake.limits import Limits as _Limits
from errorgate.otlp.flat import request_shape, scope_fits
from errorgate.receiver.config import ValidationConfig
from errorgate.signals import ExportRequest, Signal, prune_empty

_ITEM_NOUN = {Signal.TRACES: "spans", Signal.LOGS: "log records", Signal.METRICS: "data points"}
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


@dataclass
class Rejections:
    """Items removed from a request, ready to dead-letter, and why.

    ``count`` is in the signal's item unit (spans, log records, metric data points), so
    it balances against ``errorgate.signals.count_items``. ``reasons`` counts the same
    items per reason, except that a metric carrying no data points counts once there.
    """

    request: ExportRequest
    reasons: Counter[str] = field(default_factory=Counter)
    count: int = 0
    # Items the validated request held before any were removed (so the caller need not count again).
    examined: int = 0
    # The received bytes are what serializing the request gives (see ``RequestShape.canonical``).
    canonical: bool = False

    @property
    def kept(self) -> int:
        """Items left in the validated request: ``count_items`` of it, without the walk."""
        return self.examined - self.count

    @property
    def signal(self) -> Signal:
        return Signal.of(self.request)

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def message(self) -> str:
        """One line for OTLP partial_success.error_message."""
        if not self.reasons:
            return ""
        parts = "; ".join(f"{reason} x{n}" for reason, n in self.reasons.most_common())
        return f"rejected {self.count} {_ITEM_NOUN[self.signal]}: {parts}"


def validate_request(
    signal: Signal, request: ExportRequest, limits: ValidationConfig, raw: bytes | None = None
) -> Rejections:
    """Remove invalid items from ``request`` (in place) and return them with reasons.

    ``raw``, when given, must be ``request`` in protobuf encoding (the received body): it
    saves serializing the request again."""
    # One C-speed pass decides whether any nested values exist; without them, items that
    # are small enough need no per-attribute Python at all. Their sizes come from the received
    # bytes at C speed too (``WireSizes``), not from ``ByteSize()`` per part.
    data = request.SerializeToString() if raw is None else raw
    nested, links, canonical = request_shape(signal, data)
    lim = _Limits(limits, not nested, data)
    rejections = Rejections(signal.new_request(), canonical=canonical and raw is not None)
    if signal is Signal.TRACES:
        assert isinstance(request, ExportTraceServiceRequest)
        _validate_traces(request, rejections, lim, links)
    elif signal is Signal.LOGS:
        assert isinstance(request, ExportLogsServiceRequest)
        _validate_logs(request, rejections, lim)
    else:
        assert isinstance(request, ExportMetricsServiceRequest)
        _validate_metrics(request, rejections, lim)
    if rejections:
        prune_empty(request)
    return rejections


def _container_reason(lim: _Limits, where: str, attrs: Sequence[KeyValue]) -> str | None:
    reason = lim.attributes(attrs) if attrs else None
    return f"{where} {reason}" if reason else None


def _move(items: Any, bad: list[int], dst: Any) -> None:
    """Copy items at indexes ``bad`` (ascending) into ``dst`` and delete them from ``items``."""
    for i in bad:
        dst.add().CopyFrom(items[i])
    for i in reversed(bad):
        del items[i]


# ---------------------------------------------------------------- traces


def _span_reason(span: Span, lim: _Limits) -> str | None:
    tid = span.trace_id
    if len(tid) != 16:
        return f"trace_id must be 16 bytes (got {len(tid)})"
    if tid == _ZERO_TRACE_ID:
        return "trace_id must not be all zeros"
    sid = span.span_id
    if len(sid) != 8:
        return f"span_id must be 8 bytes (got {len(sid)})"
    if sid == _ZERO_SPAN_ID:
        return "span_id must not be all zeros"
    pid = span.parent_span_id
    if pid and len(pid) != 8:
        return f"parent_span_id must be empty or 8 bytes (got {len(pid)})"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time before start_time"
    if span.links:
        for link in span.links:
            if len(link.trace_id) != 16:
                return f"link trace_id must be 16 bytes (got {len(link.trace_id)})"
            if len(link.span_id) != 8:
                return f"link span_id must be 8 bytes (got {len(link.span_id)})"
    size_class = lim.size_class(span)
    if size_class == 0:
        return None
    if size_class == 1:
        return _span_count_reason(span, lim.max_attrs)
    if span.attributes:
        reason = lim.attributes(span.attributes)
        if reason:
            return reason
    for event in span.events:
        if event.attributes:
            reason = lim.attributes(event.attributes)
            if reason:
                return f"event {reason}"
    for link in span.links:
        if link.attributes:
            reason = lim.attributes(link.attributes)
            if reason:
                return f"link {reason}"
    return None


def _span_count_reason(span: Span, max_attrs: int) -> str | None:
    too_many = f"more than {max_attrs} attributes"
    if len(span.attributes) > max_attrs:
        return too_many
    for event in span.events:
        if len(event.attributes) > max_attrs:
            return f"event {too_many}"
    for link in span.links:
        if len(link.attributes) > max_attrs:
            return f"link {too_many}"
    return None


def _validate_traces(
    request: ExportTraceServiceRequest, rej: Rejections, lim: _Limits, links: bool = True
) -> None:
    """``links``: the request may hold span links (when it surely holds none, no span is asked:
    reading a span's links costs a quarter of the usual span's check)."""
    out = rej.request
    assert isinstance(out, ExportTraceServiceRequest)
    for rs, (res_fits, scopes_fit) in zip(
        request.resource_spans, lim.fits(request.resource_spans), strict=False
    ):
        res_reason = None if res_fits else _container_reason(lim, "resource", rs.resource.attributes)
        rej_rs = None
        for ss, (scope_fit, all_fit, sizes) in zip(
            rs.scope_spans, scope_fits(scopes_fit, rs.scope_spans), strict=False
        ):
            reason_all = res_reason or (
                None if scope_fit else _container_reason(lim, "scope", ss.scope.attributes)
            )
            spans = ss.spans
            rej.examined += len(spans)
            if sizes is not None and len(sizes) != len(spans):
                all_fit, sizes = False, None  # cannot happen for bytes that decoded; stay exact anyway
            small = lim.small
            bad: list[int] = []
            for i, span in enumerate(spans):
                if not reason_all:
                    # The usual span, checked inline; anything unusual takes the full walk.
                    tid = span.trace_id
                    sid = span.span_id
                    if (
                        len(tid) == 16
                        and len(sid) == 8
                        and tid != _ZERO_TRACE_ID
                        and sid != _ZERO_SPAN_ID
                        and len(span.parent_span_id) in (0, 8)
                        and span.end_time_unix_nano >= span.start_time_unix_nano
                        and (not links or not span.links)
                        and (all_fit or (sizes is not None and sizes[i] <= small))
                    ):
                        continue
                reason = reason_all or _span_reason(span, lim)
                if reason:
                    bad.append(i)
                    rej.reasons[reason] += 1
            if not bad:
                continue
            if rej_rs is None:
                rej_rs = out.resource_spans.add(resource=rs.resource, schema_url=rs.schema_url)
            rej_ss = rej_rs.scope_spans.add(scope=ss.scope, schema_url=ss.schema_url)
            _move(spans, bad, rej_ss.spans)
            rej.count += len(bad)


# ---------------------------------------------------------------- logs


def _log_reason(record: LogRecord, lim: _Limits) -> str | None:
    tid = record.trace_id
    if tid and len(tid) != 16:
        return f"trace_id must be empty or 16 bytes (got {len(tid)})"
    sid = record.span_id
    if sid and len(sid) != 8:
        return f"span_id must be empty or 8 bytes (got {len(sid)})"
    size_class = lim.size_class(record)
    if size_class == 0:
        return None
    if size_class == 1:
        # Without nesting the body is a scalar; only the attribute count is left to check.
        return f"more than {lim.max_attrs} attributes" if len(record.attributes) > lim.max_attrs else None
    if record.attributes:
        reason = lim.attributes(record.attributes)
        if reason:
            return reason
    if record.HasField("body"):
        reason = lim.value(record.body)
        if reason:
            return f"body {reason}"
    return None


def _validate_logs(request: ExportLogsServiceRequest, rej: Rejections, lim: _Limits) -> None:
    out = rej.request
    assert isinstance(out, ExportLogsServiceRequest)
    for rl, (res_fits, scopes_fit) in zip(
        request.resource_logs, lim.fits(request.resource_logs), strict=False
    ):
        res_reason = None if res_fits else _container_reason(lim, "resource", rl.resource.attributes)
        rej_rl = None
        for sl, (scope_fit, all_fit, sizes) in zip(
            rl.scope_logs, scope_fits(scopes_fit, rl.scope_logs), strict=False
        ):
            reason_all = res_reason or (
                None if scope_fit else _container_reason(lim, "scope", sl.scope.attributes)
            )
            records = sl.log_records
            rej.examined += len(records)
            if sizes is not None and len(sizes) != len(records):
                all_fit, sizes = False, None  # cannot happen for bytes that decoded; stay exact anyway
            small = lim.small
            bad: list[int] = []
            for i, record in enumerate(records):
                if (
                    not reason_all
                    and len(record.trace_id) in (0, 16)
                    and len(record.span_id) in (0, 8)
                    and (all_fit or (sizes is not None and sizes[i] <= small))
                ):
                    continue
                reason = reason_all or _log_reason(record, lim)
                if reason:
                    bad.append(i)
                    rej.reasons[reason] += 1
            if not bad:
                continue
            if rej_rl is None:
                rej_rl = out.resource_logs.add(resource=rl.resource, schema_url=rl.schema_url)
            rej_sl = rej_rl.scope_logs.add(scope=sl.scope, schema_url=sl.schema_url)
            _move(records, bad, rej_sl.log_records)
            rej.count += len(bad)


# ---------------------------------------------------------------- metrics


def _metric_reason(metric: Metric, kind: str | None) -> str | None:
    if not metric.name:
        return "metric name is empty"
    if kind is None:
        return "metric has no data type"
    return None


def _validate_metrics(request: ExportMetricsServiceRequest, rej: Rejections, lim: _Limits) -> None:
    out = rej.request
    assert isinstance(out, ExportMetricsServiceRequest)
    for rm, (res_fits, scopes_fit) in zip(
        request.resource_metrics, lim.fits(request.resource_metrics), strict=False
    ):
        res_reason = None if res_fits else _container_reason(lim, "resource", rm.resource.attributes)
        rej_rm = None
        for sm, (scope_fit, all_fit, sizes) in zip(
            rm.scope_metrics, scope_fits(scopes_fit, rm.scope_metrics), strict=False
        ):
            reason_all = res_reason or (
                None if scope_fit else _container_reason(lim, "scope", sm.scope.attributes)
            )
            metrics = sm.metrics
            if sizes is not None and len(sizes) != len(metrics):
                all_fit, sizes = False, None  # cannot happen for bytes that decoded; stay exact anyway
            whole: list[int] = []  # metrics rejected as a whole
            partial: list[tuple[int, list[int]]] = []  # (metric index, bad data point indexes)
            for i, metric in enumerate(metrics):
                kind = metric.WhichOneof("data")
                points = getattr(metric, kind).data_points if kind else ()
                rej.examined += len(points)
                reason = reason_all or _metric_reason(metric, kind)
                if reason:
                    whole.append(i)
                    rej.reasons[reason] += max(len(points), 1)
                    rej.count += len(points)
                    continue
                size_class = lim.size_class(metric, 0 if all_fit else sizes[i] if sizes is not None else None)
                if size_class == 0:
                    continue
                bad_points: list[int] = []
                for j, point in enumerate(points):
                    if size_class == 1:
                        p_reason = (
                            f"more than {lim.max_attrs} attributes"
                            if len(point.attributes) > lim.max_attrs
                            else None
                        )
                    else:
                        p_reason = lim.attributes(point.attributes) if point.attributes else None
                    if p_reason:
                        bad_points.append(j)
                        rej.reasons[f"data point {p_reason}"] += 1
                if bad_points:
                    partial.append((i, bad_points))
                    rej.count += len(bad_points)
            if not whole and not partial:
                continue
            if rej_rm is None:
                rej_rm = out.resource_metrics.add(resource=rm.resource, schema_url=rm.schema_url)
            rej_sm = rej_rm.scope_metrics.add(scope=sm.scope, schema_url=sm.schema_url)
            for i, bad_points in partial:
                _split_points(metrics[i], bad_points, rej_sm.metrics.add())
            _move(metrics, whole, rej_sm.metrics)


def _split_points(metric: Metric, bad: list[int], dst: Metric) -> None:
    """Move the data points at ``bad`` into ``dst``, a copy of ``metric`` otherwise."""
    dst.CopyFrom(metric)
    kind = metric.WhichOneof("data")
    assert kind is not None
    src_points = getattr(metric, kind).data_points
    dst_points = getattr(dst, kind).data_points
    bad_set = set(bad)
    for j in reversed(range(len(dst_points))):
        if j not in bad_set:
            del dst_points[j]
    for j in reversed(bad):
        del src_points[j]
