"""redact's item memo signatures from the request's bytes (errorgate_native, behind
``processors.redaction.signatures``): every native signature is byte for byte the Python one
(``memo.span_signature``/``log_signature``) on canonical bytes, hostile bytes never crash it nor
give a signature of other content, redact's output is the same with the native path on and
off, and the processor worker never hands a later processor the received bytes of a request
an earlier one changed (they would be stale signatures: a memo hit for content never seen)."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from bench.redact_processor import make_batches
from bench.traffic import build_templates, patched
from errorgate import attributes as A
from errorgate.component import Capabilities, ComponentContext, Output, Processor
from errorgate.pipeline.worker.process import _run
from errorgate.processors.redact import RedactConfig, RedactProcessor
from errorgate.processors.redaction import signatures
from errorgate.processors.redaction import walker as walker_module
from errorgate.processors.redaction.memo import log_signature, span_signature
from errorgate.signals import WIRE_NOTE, Batch, Signal, count_items, iter_log_records, iter_spans
from errorgate.telemetry import Telemetry
from tests.support.receiver_kit import sdk_logs, sdk_spans
from tests.support.wire_mutations import MUTATIONS

native = pytest.mark.skipif(
    not signatures.NATIVE,
    reason="errorgate_native (with item_signatures) is not installed, or ERRORGATE_NATIVE=0",
)
CODES = {Signal.TRACES: 0, Signal.LOGS: 1}
EMAIL = "jane.doe@example.com"


def native_signatures(signal: Signal, data: bytes) -> list[bytes | None] | None:
    import errorgate_native

    return errorgate_native.item_signatures(CODES[signal], data)  # type: ignore[no-any-return]


def python_signatures(signal: Signal, request: Any) -> list[bytes]:
    if signal is Signal.TRACES:
        return [span_signature(span) for _, _, span in iter_spans(request)]
    return [log_signature(record) for _, _, record in iter_log_records(request)]


# ---------------------------------------------------------------- requests


def _span(i: int, name: str = "GET /api/orders/{id}", **fields: Any) -> Span:
    span = Span(
        trace_id=bytes([i % 250 + 1]) * 16,
        span_id=bytes([i % 250 + 2]) * 8,
        name=name,
        start_time_unix_nano=1_700_000_000_000_000_000 + i,
        end_time_unix_nano=1_700_000_000_500_000_000 + i,
        kind=Span.SPAN_KIND_SERVER if i % 2 else Span.SPAN_KIND_CLIENT,
        **fields,
    )
    A.set_value(span.attributes, "http.route", "/api/orders/{id}")
    return span


def hand_traces() -> ExportTraceServiceRequest:
    """Events, links, unicode, parents, many resources and scopes, empty spans and scopes."""
    req = ExportTraceServiceRequest()
    for r in range(7):
        rs = req.resource_spans.add()
        A.set_value(rs.resource.attributes, "service.name", f"svc-{r}")
        for s in range(r % 4):  # resource 0 has no scope at all
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope-{s}"
            for i in range(s * 5):  # scope 0 of each resource has no span
                span = ss.spans.add()
                span.CopyFrom(
                    _span(r * 100 + s * 10 + i, parent_span_id=bytes([i + 1]) * 8 if i % 3 else b"")
                )
                if i == 1:
                    span.name = "Zürich ☕ 東京 — payé"
                    A.set_value(span.attributes, "note", f"contact {EMAIL} ✉")
                if i == 2:
                    span.events.add(name="exception", time_unix_nano=5 + i)
                if i == 4:
                    span.links.add(trace_id=bytes(range(16)), span_id=bytes(range(8)))
                if i == 5:
                    span.Clear()  # an empty span: its signature is empty too
                if i == 7:
                    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="timeout 東京"))
                    span.trace_state = "k=v"
                    span.flags = 0x301
    return req


def hand_logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for r in range(4):
        rl = req.resource_logs.add()
        A.set_value(rl.resource.attributes, "service.name", f"svc-{r}")
        for s in range(r):
            sl = rl.scope_logs.add()
            for i in range(s * 4):
                rec = sl.log_records.add()
                if i == 3:
                    continue  # an empty record
                rec.time_unix_nano, rec.observed_time_unix_nano = 10 + i, 20 + i
                rec.severity_number, rec.severity_text = 17, "ERROR"
                if i % 2:
                    rec.trace_id, rec.span_id = bytes([i + 1]) * 16, bytes([i + 1]) * 8
                rec.body.string_value = (
                    f"payment declined for {EMAIL} à Zürich" if i == 1 else "order processed"
                )
                A.set_value(rec.attributes, "attempt", i)
                rec.event_name = "pay" if i == 2 else ""
                rec.flags = 1
    return req


def corpus() -> Iterator[tuple[str, Signal, bytes]]:
    for i, t in enumerate(build_templates()):
        if t.signal != Signal.METRICS.value:
            yield f"bench-{i}-{t.signal}", Signal(t.signal), patched(t, i + 1)
    yield "sdk-traces", Signal.TRACES, encode_spans(sdk_spans(n_children=20)).SerializeToString()
    yield "sdk-logs", Signal.LOGS, encode_logs(sdk_logs()).SerializeToString()
    yield "hand-traces", Signal.TRACES, hand_traces().SerializeToString()
    yield "hand-logs", Signal.LOGS, hand_logs().SerializeToString()
    yield "empty", Signal.TRACES, b""
    yield "empty-resource", Signal.LOGS, b"\x0a\x00"


CORPUS = list(corpus())


# ---------------------------------------------------------------- native against Python


@native
@pytest.mark.parametrize(("name", "signal", "data"), CORPUS, ids=[c[0] for c in CORPUS])
def test_native_signatures_are_the_python_ones_byte_for_byte(name: str, signal: Signal, data: bytes) -> None:
    request = signal.parse(data)
    assert request.SerializeToString() == data  # canonical, as the pipeline hands bytes
    found = native_signatures(signal, data)
    assert found is not None
    expected = python_signatures(signal, request)
    assert len(found) == len(expected) == count_items(request)
    items = [item for _, _, item in (iter_spans if signal is Signal.TRACES else iter_log_records)(request)]  # type: ignore[operator]
    for sig, want, item in zip(found, expected, items, strict=True):
        if signal is Signal.TRACES and (item.events or item.links):
            assert sig is None  # the Python signature blanks their ids and times too
        else:
            assert sig == want, name


@native
def test_the_hand_made_requests_cover_what_they_claim() -> None:
    found = native_signatures(Signal.TRACES, hand_traces().SerializeToString())
    assert found is not None and len(found) == 25
    assert found.count(None) >= 4 and b"" in found  # events and links left to Python; an empty span
    assert any(s is not None and "東京".encode() in s for s in found)


def _check_sound(signal: Signal, data: bytes) -> str:
    """What the native side made of ``data``, after checking it gave no signature of other content."""
    found = native_signatures(signal, data)
    try:
        request = signal.parse(data)
    except DecodeError:
        return "unparsable"  # never handed over by the pipeline: no crash is all that counts
    if found is None:
        return "declined"
    expected = python_signatures(signal, request)
    assert len(found) == len(expected)
    item_type = Span if signal is Signal.TRACES else LogRecord
    for sig, want in zip(found, expected, strict=True):
        if sig is not None:  # decodes to exactly the blanked item (the bytes may be non-canonical)
            assert item_type.FromString(sig).SerializeToString() == want
    return "signed"


@native
def test_hostile_bytes_never_crash_nor_sign_other_content() -> None:
    rng = random.Random(15)
    small = [(s, d) for name, s, d in CORPUS if d and not name.startswith("sdk-traces")]
    outcomes: dict[str, int] = {}
    for signal, data in small[-4:]:  # every truncation of the small ones
        for end in range(len(data)):
            outcome = _check_sound(signal, data[:end])
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    for _ in range(3000):
        signal, data = rng.choice(small)
        buf = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 3))):
            if buf:
                rng.choice(MUTATIONS)(rng, buf)
        outcome = _check_sound(signal, bytes(buf))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(64))
        for signal in CODES:
            _check_sound(signal, data)
    # Flips in values are still signed; most others break what upb accepts (hand-made cases of
    # what it accepts and the native walk declines: below).
    assert outcomes["signed"] > 200 and outcomes["unparsable"] > 200, outcomes


def _varint(value: int) -> bytes:
    out = b""
    while value > 0x7F:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


@native
def test_what_upb_keeps_as_unknown_fields_is_left_to_python() -> None:
    """Records upb accepts but keeps as unknown fields (a known field number with another wire
    type, groups): the Python signature keeps them elsewhere, so the native walk gives none."""
    name = _field(5, b"x")
    group = _varint(20 << 3 | 3) + _varint(1 << 3) + b"\x01" + _varint(20 << 3 | 4)
    varint_trace_id = _varint(1 << 3) + b"\x05"
    cases = {
        "varint trace id": (
            _field(1, _field(2, _field(2, name + varint_trace_id) + _field(2, name))),
            [None, b"x"],
        ),
        "group in a span": (_field(1, _field(2, _field(2, name + group))), None),
        "group in a resource": (_field(1, group + _field(2, _field(2, name))), None),
        "scope as a varint": (_field(1, _varint(2 << 3) + b"\x05"), None),
    }
    for case, (data, want) in cases.items():
        request = Signal.TRACES.parse(data)  # upb accepts them all
        found = native_signatures(Signal.TRACES, data)
        if want is None:
            assert found is None, case
        else:
            assert found == [None, name] and len(python_signatures(Signal.TRACES, request)) == 2, case


@native
def test_metrics_have_no_item_signatures_and_unknown_signals_are_refused() -> None:
    import errorgate_native

    assert errorgate_native.item_signatures(2, b"\x0a\x00") is None
    with pytest.raises(ValueError, match="signal"):
        errorgate_native.item_signatures(3, b"")


@native
def test_bytes_of_another_request_are_never_used() -> None:
    one, two = (Signal.TRACES.parse(patched(build_templates()[0], i)) for i in (1, 2))
    del two.resource_spans[0].scope_spans[0].spans[0]
    assert signatures.batch_signatures(Batch.of(two), one.SerializeToString()) is None  # one span more
    found = signatures.batch_signatures(Batch.of(two), None)  # serialized here: its own bytes
    assert found is not None and len(found) == count_items(two)
    assert all(f is None or f == p for f, p in zip(found, python_signatures(Signal.TRACES, two), strict=True))


def test_fallback_signs_nothing_and_environment_turns_native_off(monkeypatch: pytest.MonkeyPatch) -> None:
    request = Signal.TRACES.parse(patched(build_templates()[0], 1))
    monkeypatch.setattr(signatures, "_native", None)
    assert signatures.batch_signatures(Batch.of(request), None) is None
    code = "from errorgate.processors.redaction import signatures; print(signatures.NATIVE)"
    env = {**os.environ, "ERRORGATE_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "False"


# ---------------------------------------------------------------- through the redact processor


def make_redact(tmp_path: Path) -> RedactProcessor:
    ctx = ComponentContext("redact", tmp_path, Telemetry(), logging.getLogger("test.redact"), {})
    return RedactProcessor(RedactConfig.model_validate({"workers": 0}), ctx)


def _shift(request: Any, round_: int) -> Any:
    """``request`` with other ids and times (where set): the same content, other items."""
    copy = type(request)()
    copy.CopyFrom(request)
    for _, _, item in (
        iter_spans(copy) if isinstance(copy, ExportTraceServiceRequest) else iter_log_records(copy)
    ):
        if item.trace_id:
            item.trace_id = bytes([round_ + 1]) + item.trace_id[1:]
        if item.span_id:
            item.span_id = bytes([round_ + 1]) + item.span_id[1:]
        if isinstance(item, Span) and item.start_time_unix_nano:
            item.start_time_unix_nano += round_
            item.end_time_unix_nano += round_
        elif isinstance(item, LogRecord) and item.time_unix_nano:
            item.time_unix_nano += round_
    return copy


def _memo_traffic() -> list[Batch]:
    """Hand-made requests three times over with other ids and times (the memo remembers, then
    hits or replays: an e-mail seen again), and bench traffic with some never-seen values; half
    of them carry their bytes as the pipeline hands them."""
    batches = []
    for round_ in range(3):
        batches += [Batch.of(_shift(r, round_)) for r in (hand_traces(), hand_logs())]
    batches += make_batches(60, 0.2, seed=3)
    for i, b in enumerate(batches):
        if i % 2:
            b.notes[WIRE_NOTE] = b.request.SerializeToString()
    return batches


def _redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on: bool) -> tuple[list[bytes], int]:
    """Outputs of one redact processor over the traffic, and how many spans and log records got
    a Python signature."""
    with monkeypatch.context() as m:
        if not on:
            m.setattr(signatures, "_native", None)
        calls = [0]

        def counted(fn: Any) -> Any:
            return lambda item: calls.__setitem__(0, calls[0] + 1) or fn(item)

        m.setattr(walker_module, "span_signature", counted(span_signature))
        m.setattr(walker_module, "log_signature", counted(log_signature))
        proc = make_redact(tmp_path)
        out = []
        for batch in _memo_traffic():
            for b in proc.process(batch).batches:
                out.append(b.request.SerializeToString())
                assert WIRE_NOTE not in b.notes  # void: redaction may have changed the request
        assert proc.walker.redacted is not None and len(proc.walker.redacted) > 0  # replays happened
        proc.shutdown()
    return out, calls[0]


@native
def test_redact_output_is_the_same_with_native_signatures_on_and_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    off, python_calls = _redacted(tmp_path / "off", monkeypatch, on=False)
    on, fallback_calls = _redacted(tmp_path / "on", monkeypatch, on=True)
    assert on == off
    assert fallback_calls < python_calls / 20, (fallback_calls, python_calls)  # spans with events or links
    redacted = [r for r in on if EMAIL.encode() in r]
    assert not redacted and any(b"<EMAIL_ADDRESS>" in r for r in on)


# ---------------------------------------------------------------- in the processor worker


class _Tagger(Processor):
    """Changes every span without reading (or popping) the received bytes."""

    capabilities = Capabilities()

    def process(self, batch: Batch) -> Output:
        for _, _, span in iter_spans(batch.request):  # type: ignore[arg-type]
            A.set_value(span.attributes, "note", f"mail {EMAIL}")
        return Output(batches=[batch])


class _Recorder(Processor):
    capabilities = Capabilities(reads_wire_note=True)

    def __init__(self) -> None:
        self.seen: list[object] = []

    def process(self, batch: Batch) -> Output:
        self.seen.append(batch.notes.get(WIRE_NOTE))
        return Output(batches=[batch])


def _worker_run(processors: dict[tuple[str, int], Processor], data: bytes) -> ExportTraceServiceRequest:
    reply = _run(processors, list(processors), "traces", data, {}, 0.0, "otlp", "")
    assert reply[0] == "ok", reply
    (part,) = reply[1]
    return ExportTraceServiceRequest.FromString(part[1])


def test_the_worker_hands_the_received_bytes_to_the_first_processor_only() -> None:
    first, tagger, later = _Recorder(), _Tagger(), _Recorder()
    data = patched(build_templates()[0], 1)
    _worker_run({("first", 0): first, ("tagger", 0): tagger, ("later", 0): later}, data)
    assert first.seen == [data]
    assert later.seen == [None]


@pytest.mark.parametrize("on", [True, False])
def test_redact_after_a_processor_that_changed_the_request_redacts_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on: bool
) -> None:
    if on and not signatures.NATIVE:
        pytest.skip("errorgate_native is not installed")
    if not on:
        monkeypatch.setattr(signatures, "_native", None)
    redact = make_redact(tmp_path)
    data = patched(build_templates()[0], 1)
    for _ in range(3):  # the received content, learnt clean by the item memo
        _worker_run({("redact", 0): redact}, data)
    out = _worker_run({("tagger", 0): _Tagger(), ("redact", 0): redact}, data)
    notes = [A.get(span.attributes, "note") for _, _, span in iter_spans(out)]
    assert notes and set(notes) == {"mail <EMAIL_ADDRESS>"}


@pytest.mark.parametrize("on", [True, False])
def test_classify_then_redact_in_the_worker_keeps_classifys_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on: bool
) -> None:
    from bench.processors import build

    if on and not signatures.NATIVE:
        pytest.skip("errorgate_native is not installed")
    if not on:
        monkeypatch.setattr(signatures, "_native", None)
    telemetry = Telemetry()
    processors = {
        ("classify", 0): build("classify", tmp_path, telemetry),
        ("redact", 0): make_redact(tmp_path),
    }
    request = ExportTraceServiceRequest()
    ss = request.resource_spans.add().scope_spans.add()
    A.set_value(request.resource_spans[0].resource.attributes, "service.name", "checkout")
    for i in range(4):
        span = ss.spans.add()
        span.CopyFrom(_span(i, status=Status(code=Status.STATUS_CODE_ERROR, message="connection refused")))
        A.set_value(span.attributes, "customer", EMAIL)
    for round_ in range(3):  # the memo remembers the redacted content, then replays it
        out = _worker_run(processors, _shift(request, round_).SerializeToString())
        spans = [span for _, _, span in iter_spans(out)]
        assert len(spans) == 4
        for span in spans:
            assert A.get(span.attributes, "errorgate.error.fingerprint")
            assert A.get(span.attributes, "errorgate.error.category")
            assert A.get(span.attributes, "customer") == "<EMAIL_ADDRESS>"
    processors[("redact", 0)].shutdown()


# ---------------------------------------------------------------- in the gateway's own pipeline


class _PassOn(Processor):
    """Reads the bytes and hands them on with the unchanged request (as the log hold does)."""

    capabilities = Capabilities(reads_wire_note=True)

    def process(self, batch: Batch) -> Output:
        data = batch.notes.pop(WIRE_NOTE, None)
        if isinstance(data, bytes):
            batch.notes[WIRE_NOTE] = data
        return Output(batches=[batch])


@pytest.mark.parametrize("tagger", [False, True])
def test_bytes_a_stage_hands_on_reach_only_a_next_stage_that_reads_them(tmp_path: Path, tagger: bool) -> None:
    import threading

    from errorgate.delivery.dlq import DeadLetterStore
    from errorgate.pipeline.stages import Pipeline, Stage

    telemetry, later = Telemetry(), _Recorder()
    stages = [
        Stage("pass", _PassOn()),
        *([Stage("tagger", _Tagger())] if tagger else []),
        Stage("later", later),
    ]
    pipeline = Pipeline(
        name="traces",
        signal=Signal.TRACES,
        receivers=["otlp"],
        stages=stages,
        exporters=[],
        telemetry=telemetry,
        dlq=DeadLetterStore(tmp_path / "dlq", telemetry),
        lock=threading.RLock(),
    )
    data = patched(build_templates()[0], 1)
    pipeline.consume(Batch(Signal.TRACES, Signal.TRACES.parse(data), received_at=1.0), data)
    assert later.seen == [None] if tagger else later.seen == [data]
