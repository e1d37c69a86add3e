"""``sample``: error-aware tail sampling through the real assembler, with consistent th/adjusted counts."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from errorgate import attributes
from errorgate.component import PROCESSORS, ComponentContext, Output
from errorgate.config import ConfigError, parse_config
from errorgate.pipeline.assembly.assembler import TraceAssembler
from errorgate.processors.sample import SampleConfig, SampleProcessor
from errorgate.processors.sampling import consistent
from errorgate.signals import Batch, Signal, iter_log_records, iter_spans
from errorgate.telemetry import Telemetry

T0 = 1_700_000_000.0
NS = 1_000_000_000
ADJ = "errorgate.sampling.adjusted_count"


def ctx(tmp_path: Path, telemetry: Telemetry | None = None) -> ComponentContext:
    return ComponentContext(
        component_id="sample",
        data_dir=tmp_path,
        telemetry=telemetry or Telemetry(),
        logger=logging.getLogger("t"),
    )


def make(tmp_path: Path, telemetry: Telemetry | None = None, **settings: object) -> SampleProcessor:
    factory = PROCESSORS.get("sample")
    assert factory is not None
    proc = factory.create(factory.config_model.model_validate(settings), ctx(tmp_path, telemetry))
    assert isinstance(proc, SampleProcessor)
    return proc


def span(
    trace: bytes,
    sid: int,
    *,
    error: bool = False,
    start: float = T0,
    dur: float = 0.01,
    tracestate: str = "",
    **attrs: object,
) -> Span:
    s = Span(trace_id=trace, span_id=sid.to_bytes(8, "big"), name=f"op{sid}", trace_state=tracestate)
    s.start_time_unix_nano = int(start * NS)
    s.end_time_unix_nano = int((start + dur) * NS)
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
        s.status.message = "boom"
    for k, v in attrs.items():
        attributes.set_value(s.attributes, k.replace("_", "."), v)  # type: ignore[arg-type]
    return s


def traces(service: str, *spans: Span) -> Batch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attributes.set_value(rs.resource.attributes, "service.name", service)
    rs.scope_spans.add().spans.extend(spans)
    return Batch(Signal.TRACES, req, received_at=T0)


def complete(*spans: Span, service: str = "svc") -> Batch:
    b = traces(service, *spans)
    b.notes["complete_traces"] = True
    return b


def kept_spans(out: Output) -> list[Span]:
    return [s for b in out.batches for _, _, s in iter_spans(b.request)]  # type: ignore[arg-type]


def rand_tid(rng: random.Random) -> bytes:
    return rng.getrandbits(128).to_bytes(16, "big")


def metric(telemetry: Telemetry, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(generate_latest(telemetry.registry).decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_error_trace_kept_whole_across_services_and_out_of_order(tmp_path: Path) -> None:
    telemetry = Telemetry()
    proc = make(tmp_path, telemetry, healthy_keep_probability=0.0, decision_wait="10s")
    asm = TraceAssembler.from_sample_config(proc.config, ctx(tmp_path, telemetry))
    err, ok = b"\x01" * 16, b"\x02" * 16
    pieces = [
        traces("db-proxy", span(err, 4, error=True), span(ok, 14)),  # the failing leaf arrives first
        traces("checkout", span(err, 3), span(ok, 13)),
        traces("payments", span(err, 2)),
        traces("frontend", span(err, 1), span(ok, 11)),
    ]
    for i, b in enumerate(pieces):
        b.received_at = T0 + i
        assert asm.process(b).batches == []
    released = asm.poll(T0 + 10)
    out = Output()
    for b in released.batches:
        out.merge(proc.process(b))
    kept = kept_spans(out)
    assert sorted(int.from_bytes(s.span_id, "big") for s in kept) == [1, 2, 3, 4]
    services = {
        attributes.get_str(rs.resource.attributes, "service.name")
        for b in out.batches
        for rs in b.request.resource_spans  # type: ignore[union-attr]
    }
    assert services == {"db-proxy", "checkout", "payments", "frontend"}
    assert all(attributes.get(s.attributes, ADJ) == 1.0 for s in kept)
    assert out.dropped["sampled"] == 3
    assert (
        metric(telemetry, "errorgate_sampled_items_total", signal="traces", decision="kept", reason="error")
        == 4
    )
    assert (
        metric(
            telemetry,
            "errorgate_sampled_items_total",
            signal="traces",
            decision="dropped",
            reason="probability",
        )
        == 3
    )


def test_healthy_keep_rate_and_adjusted_counts_balance(tmp_path: Path) -> None:
    telemetry = Telemetry()
    proc = make(tmp_path, telemetry, healthy_keep_probability=0.1)
    rng = random.Random(7)
    n = 20_000
    kept = 0
    adjusted = 0.0
    for chunk in range(0, n, 500):
        out = proc.process(complete(*[span(rand_tid(rng), i) for i in range(chunk, chunk + 500)]))
        for s in kept_spans(out):
            kept += 1
            adjusted += attributes.get(s.attributes, ADJ)  # type: ignore[operator]
    # binomial sd = sqrt(n p (1-p)) = 42 spans; 5 sd tolerance
    assert abs(kept - n * 0.1) < 5 * 42
    assert abs(adjusted - n) < 5 * 42 * 10
    assert metric(telemetry, "errorgate_sampling_adjusted_items_total", signal="traces") == pytest.approx(
        adjusted
    )
    assert (
        metric(telemetry, "errorgate_sampled_items_total", decision="dropped", reason="probability")
        == n - kept
    )


def test_decisions_are_consistent_across_replicas(tmp_path: Path) -> None:
    a, b = (
        make(tmp_path / "a", healthy_keep_probability=0.3),
        make(tmp_path / "b", healthy_keep_probability=0.3),
    )
    rng = random.Random(3)
    ids = [rand_tid(rng) for _ in range(500)]
    kept_a = {s.trace_id for s in kept_spans(a.process(complete(*[span(t, 1) for t in ids])))}
    kept_b = {s.trace_id for s in kept_spans(b.process(complete(*[span(t, 1) for t in ids])))}
    assert kept_a == kept_b and 0 < len(kept_a) < 500
    # keep iff the lower 56 bits reach the threshold of p=0.3
    threshold = consistent.threshold_for(0.3)
    assert kept_a == {t for t in ids if int.from_bytes(t[9:], "big") >= threshold}


def test_threshold_in_tracestate_is_raised_never_lowered(tmp_path: Path) -> None:
    proc = make(tmp_path, healthy_keep_probability=0.25)  # th = 0xc
    high = b"\x00" * 9 + b"\xff" * 7  # maximal randomness: passes every threshold
    out = proc.process(
        complete(
            span(high, 1, tracestate="vendor=abc,ot=th:8;rv:ffffffffffffff"),  # 50% upstream -> raised to c
            span(
                b"\x00" * 9 + b"\xfe" + b"\xff" * 6, 2, tracestate="ot=th:f"
            ),  # 1/16 upstream: already higher
            span(b"\x00" * 9 + b"\xfd" + b"\xff" * 6, 3),
        )
    )
    by_id = {int.from_bytes(s.span_id, "big"): s for s in kept_spans(out)}
    assert by_id[1].trace_state == "ot=th:c;rv:ffffffffffffff,vendor=abc"
    assert by_id[2].trace_state == "ot=th:f"
    assert by_id[3].trace_state == "ot=th:c"
    assert attributes.get(by_id[1].attributes, ADJ) == pytest.approx(4.0)
    assert attributes.get(by_id[2].attributes, ADJ) == pytest.approx(16.0)
    assert attributes.get(by_id[3].attributes, ADJ) == pytest.approx(4.0)


def test_upstream_sampled_error_trace_keeps_upstream_count(tmp_path: Path) -> None:
    proc = make(tmp_path, healthy_keep_probability=0.0)
    out = proc.process(complete(span(b"\x05" * 16, 1, error=True, tracestate="ot=th:8")))
    (s,) = kept_spans(out)
    assert s.trace_state == "ot=th:8"
    assert attributes.get(s.attributes, ADJ) == pytest.approx(2.0)


def test_error_flood_thinned_per_fingerprint_with_balanced_counts(tmp_path: Path) -> None:
    telemetry = Telemetry()
    proc = make(
        tmp_path,
        telemetry,
        healthy_keep_probability=0.0,
        flood={"first_n_per_minute": 10, "rate_per_second_after": 1},
    )
    rng = random.Random(11)
    kept: dict[str, list[float]] = {"A": [], "B": []}
    per_minute_a: dict[int, int] = {}
    sent = {"A": 0, "B": 0}
    # 120 s of fingerprint A at 10 traces/s, fingerprint B only 5 traces in total
    for i in range(1200):
        t = T0 + i * 0.1
        fp = "B" if i % 240 == 0 else "A"
        sent[fp] += 1
        out = proc.process(
            complete(span(rand_tid(rng), 1, error=True, start=t, **{"errorgate_error_fingerprint": fp}))
        )
        for s in kept_spans(out):
            kept[fp].append(attributes.get(s.attributes, ADJ))  # type: ignore[arg-type]
            if fp == "A":
                per_minute_a[int(t // 60)] = per_minute_a.get(int(t // 60), 0) + 1
    assert len(kept["B"]) == sent["B"] == 5  # a quiet fingerprint is untouched by A's flood
    assert len(kept["A"]) < sent["A"] / 4
    assert all(n >= 10 for n in per_minute_a.values())  # never disappears; first N each minute
    # each minute: 10 whole + about 1/s after them
    assert all(n <= 10 + 61 for n in per_minute_a.values())
    # counts balance: only drops after the last kept trace are unaccounted (at most ~1 s worth)
    assert sent["A"] - 10 <= sum(kept["A"]) <= sent["A"]
    assert metric(telemetry, "errorgate_sampled_items_total", decision="dropped", reason="flood") == sent[
        "A"
    ] - len(kept["A"])


def test_fingerprint_fallback_from_service_and_message(tmp_path: Path) -> None:
    proc = make(
        tmp_path, healthy_keep_probability=0.0, flood={"first_n_per_minute": 1, "rate_per_second_after": 0}
    )
    rng = random.Random(5)
    kept = 0
    for i in range(5):
        kept += len(
            kept_spans(proc.process(complete(span(rand_tid(rng), 1, error=True, start=T0 + i), service="a")))
        )
        kept += len(
            kept_spans(proc.process(complete(span(rand_tid(rng), 1, error=True, start=T0 + i), service="b")))
        )
    assert kept == 2  # one per (service, message) group per minute


def test_latency_and_attribute_rules_keep(tmp_path: Path) -> None:
    proc = make(
        tmp_path,
        healthy_keep_probability=0.0,
        latency_threshold="2s",
        attribute_rules=[
            {"key": "http.route", "values": ["/checkout"]},
            {"key": "enduser.id", "pattern": "^vip-"},
        ],
    )
    slow = complete(span(b"\x01" * 16, 1, dur=0.5), span(b"\x01" * 16, 2, start=T0 + 1.6, dur=0.5))
    out = proc.process(slow)
    assert len(kept_spans(out)) == 2
    assert proc.decision_for(b"\x01" * 16).reason == "latency"  # type: ignore[union-attr]
    ruled = proc.process(complete(span(b"\x02" * 16, 1, http_route="/checkout"), span(b"\x02" * 16, 2)))
    assert len(kept_spans(ruled)) == 2
    vip = proc.process(complete(span(b"\x03" * 16, 1, enduser_id="vip-7")))
    plain = proc.process(
        complete(span(b"\x04" * 16, 1, enduser_id="someone"), span(b"\x05" * 16, 1, dur=1.9))
    )
    assert len(kept_spans(vip)) == 1 and kept_spans(plain) == []
    assert plain.dropped["sampled"] == 2


def test_late_spans_follow_cached_decision(tmp_path: Path) -> None:
    proc = make(tmp_path, healthy_keep_probability=0.0)
    kept_trace, dropped_trace = b"\x0a" * 16, b"\x0b" * 16
    proc.process(complete(span(kept_trace, 1, error=True), span(dropped_trace, 2)))
    late = traces("late-svc", span(kept_trace, 3), span(dropped_trace, 4))
    late.notes["late"] = True
    out = proc.process(late)
    assert [int.from_bytes(s.span_id, "big") for s in kept_spans(out)] == [3]
    assert out.dropped["sampled"] == 1
    # an error that shows up late for a dropped trace is still kept
    late_err = traces("late-svc", span(dropped_trace, 5, error=True))
    late_err.notes["late"] = True
    assert len(kept_spans(proc.process(late_err))) == 1


def test_logs_rules(tmp_path: Path) -> None:
    telemetry = Telemetry()
    proc = make(
        tmp_path,
        telemetry,
        healthy_keep_probability=0.0,
        logs={"per_service_probability": {"noisy": 0.0, "half": 0.5}, "default_probability": 1.0},
    )
    proc._rng.seed(1)
    kept_trace, dropped_trace, error_log_trace = b"\x0a" * 16, b"\x0b" * 16, b"\x0c" * 16
    proc.process(complete(span(kept_trace, 1, error=True), span(dropped_trace, 2)))

    def logs(service: str, *records: LogRecord) -> Batch:
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        attributes.set_value(rl.resource.attributes, "service.name", service)
        rl.scope_logs.add().log_records.extend(records)
        return Batch(Signal.LOGS, req)

    def rec(body: str, severity: int, trace: bytes = b"") -> LogRecord:
        r = LogRecord(severity_number=severity, trace_id=trace)  # type: ignore[arg-type]
        r.body.string_value = body
        return r

    out = proc.process(
        logs(
            "noisy",
            rec("err", 17),
            rec("info-kept-trace", 9, kept_trace),
            rec("info-dropped-trace", 9, dropped_trace),
            rec("untraced", 9),
            rec("err-with-trace", 18, error_log_trace),
            rec("info-error-log-trace", 9, error_log_trace),
        )
    )
    bodies = [r.body.string_value for b in out.batches for _, _, r in iter_log_records(b.request)]  # type: ignore[arg-type]
    assert bodies == ["err", "info-kept-trace", "err-with-trace", "info-error-log-trace"]
    assert out.dropped["sampled"] == 2
    # the trace an ERROR log pointed at is kept when its (healthy) spans are decided
    assert len(kept_spans(proc.process(complete(span(error_log_trace, 9))))) == 1

    half = proc.process(logs("half", *[rec(str(i), 9) for i in range(2000)]))
    kept = [r for b in half.batches for _, _, r in iter_log_records(b.request)]  # type: ignore[arg-type]
    assert 850 < len(kept) < 1150
    assert {attributes.get(r.attributes, ADJ) for r in kept} == {2.0}
    other = proc.process(logs("other", rec("x", 9)))
    assert [
        attributes.get(r.attributes, ADJ) for b in other.batches for _, _, r in iter_log_records(b.request)
    ] == [1.0]  # type: ignore[arg-type]
    assert (
        metric(telemetry, "errorgate_sampled_items_total", signal="logs", decision="kept", reason="severity")
        == 2
    )
    assert (
        metric(
            telemetry, "errorgate_sampled_items_total", signal="logs", decision="kept", reason="follow_trace"
        )
        == 2
    )


def test_metrics_batches_pass_untouched(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    proc = make(tmp_path)
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "x"
    m.gauge.data_points.add().as_double = 1.0
    b = Batch(Signal.METRICS, req)
    assert proc.process(b).batches == [b]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    base = "receivers: {otlp: {protocols: {grpc: {}}}}\nexporters: {debug: {}}\n"
    pipes = "service: {pipelines: {traces: {receivers: [otlp], processors: [sample], exporters: [debug]}}}\n"
    for body, key in [
        (
            "processors: {sample: {healthy_keep_probabilty: 0.2}}\n",
            "processors.sample.healthy_keep_probabilty",
        ),
        (
            "processors: {sample: {healthy_keep_probability: 1.5}}\n",
            "processors.sample.healthy_keep_probability",
        ),
        (
            "processors: {sample: {attribute_rules: [{key: a, values: [b], pattern: c}]}}\n",
            "processors.sample.attribute_rules.0",
        ),
        (
            "processors: {sample: {flood: {first_n_per_minute: 0}}}\n",
            "processors.sample.flood.first_n_per_minute",
        ),
        ("processors: {sample: {decision_wait: soon}}\n", "processors.sample.decision_wait"),
    ]:
        with pytest.raises(ConfigError) as e:
            parse_config(base + body + pipes)
        assert key in str(e.value), str(e.value)


def test_sample_config_defaults() -> None:
    c = SampleConfig()
    assert (
        c.decision_wait,
        c.num_traces,
        c.max_spans_per_trace,
        c.healthy_keep_probability,
        c.latency_threshold,
    ) == (
        10.0,
        50_000,
        10_000,
        0.1,
        2.0,
    )
    assert (c.flood.first_n_per_minute, c.flood.rate_per_second_after, c.logs.default_probability) == (
        10,
        1.0,
        1.0,
    )


def test_threshold_encoding_per_probability_sampling_spec() -> None:
    assert consistent.format_threshold(consistent.threshold_for(0.5)) == "8"
    assert consistent.format_threshold(consistent.threshold_for(0.25)) == "c"
    assert consistent.format_threshold(consistent.threshold_for(0.1)) == "e6666666666666"
    assert consistent.threshold_for(1.0) == 0
    assert consistent.get_threshold("a=b,ot=th:8;rv:00000000000001") == 0x80000000000000
    assert consistent.get_threshold("ot=th:xyz") is None
    assert consistent.get_threshold("ot=rv:00000000000001") is None
    # raise, never lower; other vendors' entries are kept
    assert consistent.with_threshold("ot=th:f", consistent.threshold_for(0.25)) == "ot=th:f"
    assert consistent.with_threshold("x=1,ot=th:4", consistent.threshold_for(0.25)) == "ot=th:c,x=1"
    assert consistent.with_threshold("", consistent.threshold_for(0.5)) == "ot=th:8"
    # explicit randomness (rv) beats the trace id
    assert consistent.randomness(b"\xff" * 16, "ot=rv:00000000000001") == 1
    assert consistent.randomness(b"\x00" * 9 + b"\x01" * 7) == int.from_bytes(b"\x01" * 7, "big")


def test_decision_cache_and_flood_state_stay_bounded(tmp_path: Path) -> None:
    proc = make(
        tmp_path, healthy_keep_probability=0.5, decision_cache_size=1000, flood={"max_fingerprints": 50}
    )
    rng = random.Random(9)
    for chunk in range(20):
        spans = [
            span(rand_tid(rng), i, error=i % 10 == 0, errorgate_error_fingerprint=f"fp{chunk}-{i}")
            if i % 10 == 0
            else span(rand_tid(rng), i)
            for i in range(500)
        ]
        proc.process(complete(*spans))
    assert len(proc._decisions) == 1000
    assert len(proc._flood) == 50


def test_fingerprint_attribute_alone_makes_an_error_trace(tmp_path: Path) -> None:
    """A fingerprint without status ERROR (e.g. a 5xx span classify fingerprinted) still marks its
    trace as an error, also when another trace in the request is an error by status; the key's
    text as a mere value does not."""
    telemetry = Telemetry()
    proc = make(tmp_path, telemetry, healthy_keep_probability=0.0)
    by_status, by_attribute, by_value = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
    out = proc.process(
        complete(
            span(by_status, 1, error=True, errorgate_error_fingerprint="a"),
            span(by_attribute, 2),
            span(by_attribute, 3, errorgate_error_fingerprint="b"),
            span(by_value, 4, note="errorgate.error.fingerprint"),
        )
    )
    assert sorted(int.from_bytes(s.span_id, "big") for s in kept_spans(out)) == [1, 2, 3]
    assert proc.decision_for(by_attribute).reason == "error"  # type: ignore[union-attr]
    assert proc.decision_for(by_value).reason == "probability"  # type: ignore[union-attr]
    assert out.dropped["sampled"] == 1
    assert metric(telemetry, "errorgate_sampled_items_total", decision="kept", reason="error") == 3


def test_adjusted_count_from_an_upstream_stage_is_replaced_not_duplicated(tmp_path: Path) -> None:
    proc = make(tmp_path, healthy_keep_probability=0.5)
    high = b"\x00" * 9 + b"\xff" * 7  # passes every threshold
    out = proc.process(complete(span(high, 1, errorgate_sampling_adjusted_count=3.0), span(high, 2)))
    for s in kept_spans(out):
        assert [kv.key for kv in s.attributes].count(ADJ) == 1
        assert attributes.get(s.attributes, ADJ) == pytest.approx(2.0)


def test_one_slow_trace_among_fast_ones_and_empty_containers_pruned(tmp_path: Path) -> None:
    proc = make(tmp_path, healthy_keep_probability=0.0, latency_threshold="2s")
    rng = random.Random(4)
    slow = rand_tid(rng)
    fast = [span(rand_tid(rng), i, start=T0 + i * 0.01) for i in range(20)]
    batch = complete(*fast, span(slow, 100, start=T0 - 1, dur=0.1), span(slow, 101, start=T0 + 1.5, dur=0.1))
    batch.request.resource_spans.add().scope_spans.add()  # type: ignore[union-attr]  # empty: pruned
    out = proc.process(batch)
    assert [int.from_bytes(s.span_id, "big") for s in kept_spans(out)] == [100, 101]
    assert proc.decision_for(slow).reason == "latency"  # type: ignore[union-attr]
    (b,) = out.batches
    assert len(b.request.resource_spans) == 1  # type: ignore[union-attr]
    assert out.dropped["sampled"] == 20


def _mixed_traces(seed: int, notes: bool) -> tuple[list[Batch], list[bytes]]:
    """Requests of many services and scopes: healthy, slow, error (by status or fingerprint),
    fingerprint text as a mere value, upstream thresholds and adjusted counts; with ``notes`` each
    carries the ERROR_TRACES_NOTE classify would leave plus healthy ids (the note may hold more)."""
    from errorgate.signals import ERROR_TRACES_NOTE, NO_UPSTREAM_TAGS_NOTE

    rng = random.Random(seed)
    batches, tids = [], []
    for b in range(30):
        req = ExportTraceServiceRequest()
        failing: set[bytes] = set()
        for r in range(rng.randint(1, 4)):
            rs = req.resource_spans.add()
            attributes.set_value(rs.resource.attributes, "service.name", f"svc{r}")
            for _ in range(rng.randint(0, 3)):
                ss = rs.scope_spans.add()
                for t in range(rng.randint(0, 4)):
                    tid = rand_tid(rng) if rng.random() < 0.7 or not tids else rng.choice(tids)
                    tids.append(tid)
                    kind = rng.random()
                    extra: dict[str, object] = {}
                    state = ""
                    if kind < 0.1:
                        extra["errorgate_error_fingerprint"] = f"fp{rng.randint(0, 2)}"
                        failing.add(tid)
                    elif kind < 0.15:
                        extra["note"] = "errorgate.error.fingerprint"
                    elif kind < 0.2:
                        state = "ot=th:8"
                    elif kind < 0.25:
                        extra["errorgate_sampling_adjusted_count"] = 4.0
                    error = rng.random() < 0.1
                    if error:
                        failing.add(tid)
                    dur = 3.0 if rng.random() < 0.05 else 0.01
                    for k in range(rng.randint(1, 3)):
                        ss.spans.append(
                            span(
                                tid,
                                b * 1000 + t * 10 + k,
                                error=error and k == 0,
                                dur=dur,
                                tracestate=state,
                                **extra,
                            )
                        )
        batch = Batch(Signal.TRACES, req, received_at=T0)
        batch.notes["complete_traces"] = b % 3 != 0
        if notes:
            extra_ids = random.Random(b).sample(tids, min(3, len(tids)))  # (rng: same batches either way)
            batch.notes[ERROR_TRACES_NOTE] = frozenset(failing | set(extra_ids))
            if b"errorgate.sampling" not in req.SerializeToString():  # as classify would say
                batch.notes[NO_UPSTREAM_TAGS_NOTE] = True
        batches.append(batch)
    return batches, tids


@pytest.mark.parametrize("probability", [0.3, 1.0])
def test_error_traces_note_gives_the_same_decisions(tmp_path: Path, probability: float) -> None:
    """With classify's note sample skips its own search for errors: everything it does must be
    the same as without (kept spans and their attributes, counts, metrics, cached decisions)."""
    results = []
    for notes in (False, True):
        telemetry = Telemetry()
        proc = make(tmp_path, telemetry, healthy_keep_probability=probability, latency_threshold="2s")
        batches, tids = _mixed_traces(7, notes)
        outs = [proc.process(b) for b in batches]
        results.append(
            (
                [b.request.SerializeToString(deterministic=True) for o in outs for b in o.batches],
                [dict(o.dropped) for o in outs],
                [proc.decision_for(t) for t in tids],
                sorted(
                    (s.name, tuple(sorted(s.labels.items())), s.value)
                    for f in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
                    for s in f.samples
                    if s.name.startswith("errorgate_sampl") and not s.name.endswith("_created")
                ),
            )
        )
    assert results[0] == results[1]
    assert any(d is not None and d.reason == "error" for d in results[0][2])


@pytest.mark.parametrize("cache_size", [3, 100_000])
def test_logs_column_wise_decisions_match_record_by_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    """Scopes decided column-wise (``sampling.logs``) get exactly what record-by-record would:
    ERROR logs before and after other records of their trace, cached trace decisions, records
    without a trace id, a small cache evicting error-logged traces."""
    from errorgate.processors.sampling import logs as log_decisions
    from errorgate.signals import NO_UPSTREAM_TAGS_NOTE

    def run(column_wise: bool) -> tuple[list[bytes], list[dict[str, int]], list[bytes], list[float]]:
        if not column_wise:
            monkeypatch.setattr(log_decisions, "scope_decisions", lambda *a, **k: None)
        telemetry = Telemetry()
        proc = make(tmp_path, telemetry, healthy_keep_probability=0.4, decision_cache_size=cache_size)
        proc._rng.seed(3)
        rng = random.Random(11)
        pool = [rand_tid(rng) for _ in range(12)]
        proc.process(complete(*[span(t, i, error=i % 4 == 0) for i, t in enumerate(pool[:6])]))
        serialized, dropped = [], []
        for _ in range(40):
            req = ExportLogsServiceRequest()
            for r in range(rng.randint(1, 3)):
                rl = req.resource_logs.add()
                attributes.set_value(rl.resource.attributes, "service.name", f"svc{r}")
                for _ in range(rng.randint(1, 3)):
                    sl = rl.scope_logs.add()
                    for _ in range(rng.randint(0, 8)):
                        pick = rng.random()
                        tid = rng.choice(pool) if pick < 0.6 else (b"" if pick < 0.65 else rand_tid(rng))
                        sl.log_records.add(trace_id=tid, severity_number=rng.choice([9, 9, 9, 13, 17, 21]))
            batch = Batch(Signal.LOGS, req)
            if column_wise:  # (and with the note that no upstream stage tagged the records)
                batch.notes[NO_UPSTREAM_TAGS_NOTE] = True
            out = proc.process(batch)
            serialized += [b.request.SerializeToString(deterministic=True) for b in out.batches]
            dropped.append(dict(out.dropped))
        samples = sorted(
            (s.name + repr(sorted(s.labels.items())), s.value)
            for f in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
            for s in f.samples
            if s.name.startswith("errorgate_sampl") and not s.name.endswith("_created")
        )
        monkeypatch.undo()
        return serialized, dropped, list(proc._error_logged), [v for _, v in samples]

    assert run(True) == run(False)


def test_prune_empty_in_place_and_has_items() -> None:
    """``signals.prune_empty`` (used after validation drops items) deletes empty containers in
    place: the ones that stay are the same objects; ``has_items`` agrees with ``count_items``."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from errorgate.signals import count_items, has_items, prune_empty

    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add()  # empty scope: goes with its resource
    kept_rs = req.resource_spans.add()
    kept_rs.scope_spans.add()
    kept_rs.scope_spans.add().spans.add(name="a")
    req.resource_spans.add()  # no scopes at all
    assert has_items(req) and count_items(req) == 1
    kept_scope = kept_rs.scope_spans[1]
    prune_empty(req)
    assert len(req.resource_spans) == 1 and len(req.resource_spans[0].scope_spans) == 1
    kept_scope.spans[0].name = "b"  # the same object as before, still in the request
    assert req.resource_spans[0].scope_spans[0].spans[0].name == "b"
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add()
    assert not has_items(logs)
    prune_empty(logs)
    assert logs == ExportLogsServiceRequest()
    metrics = ExportMetricsServiceRequest()
    sm = metrics.resource_metrics.add().scope_metrics.add()
    sm.metrics.add(name="empty").gauge.SetInParent()
    sm.metrics.add(name="full").sum.data_points.add(as_int=1)
    metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="none")
    assert has_items(metrics) and count_items(metrics) == 1
    prune_empty(metrics)
    assert [m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics] == [
        "full"
    ]
    assert not has_items(ExportMetricsServiceRequest())
