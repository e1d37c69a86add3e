"""The speed paths of ``redact`` change nothing a user sees: recognizer gates never skip a value a
recognizer would have flagged, known-clean values skipped by the walker still fail closed, and a
repeated request comes out exactly as the first one did."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from presidio_analyzer import EntityRecognizer
from prometheus_client import generate_latest

from errorgate import attributes as A
from errorgate.component import ComponentContext
from errorgate.processors.redact import RedactConfig, RedactProcessor
from errorgate.processors.redaction.engine import _MODELS, AnalysisEngine, resolve_overlaps
from errorgate.processors.redaction.recognizers.base import FreeTextRecognizer, digit_count
from errorgate.signals import Batch
from errorgate.telemetry import Telemetry
from tests.redaction_corpus import build_corpus

EMAIL = "jane.doe@example.com"

# Values built to sit right at the edge of each gate (case, separators, encodings, lengths).
EDGE_CASES = [
    "ship to 4412 Harbor View Road Suite 753",
    "pump serial SN 4F9K2-88QX1 rebooted",
    "SSN 123456789",
    "Social Security Number: 123456789",
    "ssn=078-05-1120",
    "itin 912-70-1234",
    "card 4111 1111 1111 1111",
    "card 4111-1111-1111-1111 exp",
    "n=4111111111111111",
    "call +44 20 7946 0958 now",
    "tel:(202) 555-0143",
    "phone 2025550143",
    "to=%2B44%2020%207946%200958",
    "mac 00:1A:2B:3C:4D:5E",
    "mac 00-1a-2b-3c-4d-5e",
    "mac 001a.2b3c.4d5e",
    "peer 2001:db8::8a2e:370:7334",
    "peer fe80::1",
    "client 203.0.113.7",
    "BEARER abcdefghijklmnop1234",
    "Authorization: Basic dXNlcjpwYXNzd29yZA==",
    "PASSWORD: hunter2hunter2",
    "Api-Key = s3cr3tValue",
    "Cookie: SESSIONID=abcdef123456",
    "Cookie: connect.sid=s%3Aabcdef123456",
    "aws AKIAIOSFODNN7EXAMPLE",
    "token=ghp_" + "a1B2" * 9,
    "xoxb-1234567890-abcdefghij",
    "sk_live_" + "a1B2c3D4" * 3,
    "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA",
    "postgres://admin:hunter2@db.internal:5432/app",
    "jane.doe%40example.com",
    "mailto:JANE@EXAMPLE.COM",
    "iban GB82WEST12345698765432",
    "iban gb82west12345698765432",
    "k=" + "Zx9" * 12 + "==",
    "cvv=123",
    "CVC2: 9876",
    "mrn A1234567",
    "dob 1980-01-31",
    "",
    "x",
]


def _engine(packs: list[str]) -> AnalysisEngine:
    config = RedactConfig(packs=packs, workers=0, ner=False)
    return AnalysisEngine(config.engine_settings(config.effective_policy()))


def _values() -> list[str]:
    return [s.text for s in build_corpus(300, seed=7)] + EDGE_CASES


@pytest.mark.parametrize("packs", [["secrets", "pci", "gdpr"], ["secrets", "pci", "gdpr", "hipaa"]])
def test_gates_never_skip_a_value_a_recognizer_flags(packs: list[str]) -> None:
    engine = _engine(packs)
    gated = [(r, g) for r, g in engine._gated if g is not None]
    assert len(gated) == len(engine._pattern_recognizers)  # every recognizer has a cheap gate
    flagged_by: dict[str, int] = {}
    for value in _values():
        lower, digits = value.lower(), digit_count(value)
        for recognizer, gate in gated:
            found = recognizer.analyze(value, engine._supported, engine._empty)
            if found:
                flagged_by[recognizer.name] = flagged_by.get(recognizer.name, 0) + 1
                assert gate(value, lower, digits), (recognizer.name, value)
    # The values exercise the gates: most recognizers flag something, so a gate that is too
    # strict shows up above rather than passing vacuously.
    assert len(flagged_by) >= len(gated) - 2, sorted(set(r.name for r, _ in gated) - set(flagged_by))


def test_gated_engine_finds_exactly_what_every_recognizer_finds() -> None:
    engine = _engine(["secrets", "pci", "gdpr", "hipaa"])
    for value in _values():
        results = []
        for recognizer in engine._pattern_recognizers:
            if isinstance(recognizer, FreeTextRecognizer):
                continue  # structured values (free_text=False) skip them, as NER
            results.extend(recognizer.analyze(value, engine._supported, engine._empty))
        expected = resolve_overlaps(value, [r for r in results if engine._keep(r)])
        assert engine.analyze_one(value, False) == expected, value


def make(tmp_path: Path, **settings: object) -> RedactProcessor:
    ctx = ComponentContext("redact", tmp_path, Telemetry(), logging.getLogger("test.redact"), {})
    return RedactProcessor(RedactConfig.model_validate({"workers": 0, **settings}), ctx)


def request(rng: random.Random) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    A.set_value(rs.resource.attributes, "service.name", "checkout")
    A.set_value(rs.resource.attributes, "deployment.owner", EMAIL)
    ss = rs.scope_spans.add()
    for i in range(20):
        span = ss.spans.add()
        span.name = "GET /api/orders/{id}"
        span.kind = Span.SPAN_KIND_SERVER if i % 2 else Span.SPAN_KIND_CLIENT
        A.set_value(span.attributes, "http.route", "/api/orders/{id}")
        A.set_value(span.attributes, "url.path", f"/api/orders/{rng.randint(1000, 1010)}")
        A.set_value(span.attributes, "client.address", f"203.0.113.{rng.randint(1, 3)}")
        A.set_value(span.attributes, "note", "nothing here")
        A.set_value(span.attributes, "customer", f"user{i % 3}@example.com")
        A.set_value(span.attributes, "retries", 3)
        A.set_value(span.attributes, "card", 4111111111111111)
        if i % 4 == 0:
            span.status.message = "timeout talking to orders-db"
            ev = span.events.add()
            ev.name = "exception"
            A.set_value(ev.attributes, "exception.message", f"lookup failed for {EMAIL}")
    return req


def test_a_repeated_request_comes_out_exactly_like_the_first(tmp_path: Path) -> None:
    proc = make(tmp_path)
    first, second = request(random.Random(1)), request(random.Random(1))
    proc.process(Batch.of(first))
    misses = proc.detector.cache.misses
    proc.process(Batch.of(second))
    assert proc.detector.cache.misses == misses  # nothing new was analysed...
    assert second.SerializeToString() == first.SerializeToString()  # ...and nothing differs
    spans = first.resource_spans[0].scope_spans[0].spans
    assert A.get(spans[1].attributes, "client.address") == "<IP_ADDRESS>"  # SERVER span: end user
    assert A.get(spans[0].attributes, "client.address") == "<IP_ADDRESS>"
    assert A.get(spans[0].attributes, "note") == "nothing here"
    assert A.get(spans[0].attributes, "card") != "4111111111111111"
    assert A.get(spans[0].events[0].attributes, "exception.message") == "lookup failed for <EMAIL_ADDRESS>"
    assert A.get(first.resource_spans[0].resource.attributes, "deployment.owner") == "<EMAIL_ADDRESS>"
    # resource-level redactions count on every span of the resource
    assert all((A.get(s.attributes, "errorgate.redaction.count") or 0) >= 1 for s in spans)


def test_known_clean_values_are_still_masked_when_their_item_fails(tmp_path: Path) -> None:
    proc = make(tmp_path)
    warm = ExportTraceServiceRequest()
    span = warm.resource_spans.add().scope_spans.add().spans.add()
    span.name = "checkout"
    A.set_value(span.attributes, "plain", "nothing here")
    proc.process(Batch.of(warm))
    assert proc.detector.clean_check() is not None and proc.detector.clean_check()(("nothing here", False))

    class Exploding(AnalysisEngine):
        def _patterns(self, value: str, free_text: bool) -> list:  # type: ignore[override]
            if "EXPLODE" in value:
                raise RuntimeError("recognizer crashed")
            return super()._patterns(value, free_text)

    proc.detector._engine = Exploding(proc.detector.settings)
    req = ExportTraceServiceRequest()
    bad = req.resource_spans.add().scope_spans.add().spans.add()
    bad.name = "checkout"  # known clean too
    A.set_value(bad.attributes, "plain", "nothing here")
    A.set_value(bad.attributes, "q", f"EXPLODE {EMAIL}")
    A.set_value(bad.attributes, "http.route", "/cart")
    proc.process(Batch.of(req))
    assert A.to_dict(bad.attributes) == {
        "plain": "<REDACTION_FAILED>",
        "q": "<REDACTION_FAILED>",
        "http.route": "/cart",
        "errorgate.redaction.failed": True,
    }
    assert bad.name == "<REDACTION_FAILED>"


def test_the_model_is_loaded_when_the_processor_is_built(tmp_path: Path) -> None:
    proc = make(tmp_path)
    assert proc.config.nlp_model in _MODELS
    assert proc.detector._engine is None  # the engine itself stays lazy (cheap to build)


def test_no_cache_means_no_clean_skipping(tmp_path: Path) -> None:
    proc = make(tmp_path, cache_size=0)
    assert proc.detector.clean_check() is None
    for _ in range(2):
        req = request(random.Random(3))
        proc.process(Batch.of(req))
        span = req.resource_spans[0].scope_spans[0].spans[0]
        assert A.get(span.attributes, "customer") == "<EMAIL_ADDRESS>"


def test_ner_values_get_exactly_what_presidios_analyzer_returns() -> None:
    config = RedactConfig(workers=0)
    engine = AnalysisEngine(config.engine_settings(config.effective_policy()))
    free = [s.text for s in build_corpus(400, seed=11) if s.free_text] + [
        "Refund for Jane Doe at jane@example.com, +1 202-555-0143",
        "Maria Garcia from Madrid called about card 4111 1111 1111 1111",
        "ticket opened by John Smith; token=ghp_" + "a1B2" * 9,
    ]
    names = 0
    for value in free:
        artifacts = engine.nlp_engine.process_text(value, "en")
        expected = engine.analyzer.analyze(
            value, "en", nlp_artifacts=artifacts, score_threshold=engine._floor
        )
        both = engine._patterns(value, True) + engine._names(value, artifacts)
        got = EntityRecognizer.remove_duplicates([r for r in both if r.score >= engine._floor])
        key = lambda r: (r.entity_type, r.start, r.end, r.score)  # noqa: E731
        assert sorted(map(key, got)) == sorted(map(key, expected)), value
        names += any(r.entity_type in ("PERSON", "LOCATION") for r in got)
    assert names >= 3  # NER really ran and found names


def _memo_request(trace_byte: int, note: str, with_event: bool = False) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes([trace_byte]) * 16
    span.span_id = bytes([trace_byte]) * 8
    span.start_time_unix_nano = 1000 + trace_byte
    span.end_time_unix_nano = 2000 + trace_byte
    span.name = "SELECT orders"
    A.set_value(span.attributes, "db.query.text", "SELECT * FROM orders WHERE id = $1")
    A.set_value(span.attributes, "note", note)
    if with_event:
        ev = span.events.add()
        ev.name = "retry"
        ev.time_unix_nano = 3000 + trace_byte
        A.set_value(ev.attributes, "attempt.note", note)
    return req


@pytest.mark.parametrize("with_event", [False, True])
def test_items_remembered_clean_by_content_skip_the_walk_but_never_hide_new_values(
    tmp_path: Path, with_event: bool
) -> None:
    proc = make(tmp_path)
    proc.process(Batch.of(_memo_request(1, "nothing here", with_event)))  # analysed: values clean
    assert len(proc.walker.memo) == 0
    proc.process(Batch.of(_memo_request(1, "nothing here", with_event)))
    assert len(proc.walker.memo) == 1  # walked, no slot: remembered by content
    again = _memo_request(2, "nothing here", with_event)  # other ids and times, same content
    original = again.SerializeToString()
    walked: list[object] = []
    real_span = proc.walker._span
    proc.walker._span = lambda span, clean: walked.append(span) or real_span(span, clean)  # type: ignore[method-assign]
    proc.process(Batch.of(again))
    assert walked == [] and again.SerializeToString() == original  # no walk, ids restored
    changed = _memo_request(3, f"mail {EMAIL}", with_event)  # one scanned value differs
    proc.process(Batch.of(changed))
    span = changed.resource_spans[0].scope_spans[0].spans[0]
    assert len(walked) == 1
    assert A.get(span.attributes, "note") == "mail <EMAIL_ADDRESS>"
    assert A.get(span.attributes, "errorgate.redaction.count") == (2 if with_event else 1)


def test_a_log_record_remembered_clean_keeps_its_ids_and_times(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    proc = make(tmp_path)
    for i in (1, 2, 3):  # analysed, then remembered, then skipped
        req = ExportLogsServiceRequest()
        rec = req.resource_logs.add().scope_logs.add().log_records.add()
        rec.trace_id, rec.span_id = bytes([i]) * 16, bytes([i]) * 8
        rec.time_unix_nano, rec.observed_time_unix_nano = 10 + i, 20 + i
        rec.body.string_value = "order processed"
        original = req.SerializeToString()
        proc.process(Batch.of(req))
        assert req.SerializeToString() == original
    assert len(proc.walker.memo) == 1
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.body.string_value = f"receipt sent to {EMAIL}"
    proc.process(Batch.of(req))
    assert rec.body.string_value == "receipt sent to <EMAIL_ADDRESS>"


def test_the_item_memo_pauses_itself_when_items_rarely_repeat() -> None:
    from errorgate.processors.redaction import memo

    items = memo.CleanItems(1000)
    for i in range(2 * memo.WINDOW):  # the first window only learns; the second one is judged
        items.hit(str(i).encode())
    assert not items.active()
    items.skip(memo.PAUSE_ITEMS)
    assert items.active()
    for _ in range(2 * memo.WINDOW):  # repeating items: a learning window, then a good one
        items.add(b"same")
        items.hit(b"same")
    assert items.active()


def _redacted_outputs(tmp_path: Path, replay: bool) -> tuple[list[bytes], RedactProcessor]:
    """Four requests of one content (other ids and times each), then one with another value."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    proc = make(tmp_path)
    if not replay:
        proc.walker.redacted = None
    out = []
    for i, note in enumerate([f"mail {EMAIL}"] * 4 + ["mail john@example.org"], start=1):
        req = _memo_request(i, note, False)
        A.set_value(req.resource_spans[0].scope_spans[0].spans[0].attributes, "client.address", "203.0.113.9")
        req.resource_spans[0].scope_spans[0].spans[0].kind = Span.SPAN_KIND_SERVER
        proc.process(Batch.of(req))
        out.append(req.SerializeToString())
        logs = ExportLogsServiceRequest()
        rec = logs.resource_logs.add().scope_logs.add().log_records.add()
        rec.trace_id, rec.span_id, rec.time_unix_nano = bytes([i]) * 16, bytes([i]) * 8, 10 + i
        rec.body.string_value = f"receipt sent to {EMAIL}"
        proc.process(Batch.of(logs))
        out.append(logs.SerializeToString())
    return out, proc


def test_items_redacted_before_come_out_as_a_fresh_redaction_would(tmp_path: Path) -> None:
    """A span or log record whose content was redacted before gets that result (with its own
    ids and times) without a walk: byte for byte what redacting it again gives, with the audit
    attributes and the redaction metric counted each time."""
    walked_out, walking = _redacted_outputs(tmp_path / "walk", replay=False)
    replayed_out, replaying = _redacted_outputs(tmp_path / "replay", replay=True)
    assert replayed_out == walked_out
    assert replaying.walker.redacted is not None and len(replaying.walker.redacted) == 3
    span = ExportTraceServiceRequest.FromString(replayed_out[6]).resource_spans[0].scope_spans[0].spans[0]
    assert span.span_id == bytes([4]) * 8 and span.start_time_unix_nano == 1004
    assert A.get(span.attributes, "note") == "mail <EMAIL_ADDRESS>"
    assert A.get(span.attributes, "client.address") == "<IP_ADDRESS>"
    assert A.get(span.attributes, "errorgate.redaction.count") == 2
    last = ExportTraceServiceRequest.FromString(replayed_out[8]).resource_spans[0].scope_spans[0].spans[0]
    assert A.get(last.attributes, "note") == "mail <EMAIL_ADDRESS>"  # new value: walked, found
    for proc in (walking, replaying):
        assert 'entity_type="EMAIL_ADDRESS"' in generate_latest(proc.context.telemetry.registry).decode()
    assert _redactions(walking) == _redactions(replaying) == 15.0


def _redactions(proc: RedactProcessor) -> float:
    return sum(
        s.value
        for m in proc.context.telemetry.registry.collect()
        if m.name == "errorgate_redactions"
        for s in m.samples
        if s.name == "errorgate_redactions_total"
    )


def test_items_redacted_before_are_not_replayed_when_an_action_is_keyed(tmp_path: Path) -> None:
    """``token``/``hash`` follow the keyring's current key and ``encrypt`` draws a nonce: a
    remembered result could be stale or repeat a ciphertext, so such processors always walk."""
    from tests.test_redact_processor import LocalKeyring
    from tests.test_redact_processor import make as make_keyed

    proc = make_keyed(
        tmp_path, keyring=LocalKeyring(b"t" * 32), entities={"EMAIL_ADDRESS": {"action": "encrypt"}}
    )
    outputs = []
    for i in (1, 2):
        req = _memo_request(i, f"mail {EMAIL}")
        proc.process(Batch.of(req))
        outputs.append(A.get(req.resource_spans[0].scope_spans[0].spans[0].attributes, "note"))
    assert proc.walker.redacted is None
    assert all(str(o).startswith("mail enc:v1:") for o in outputs)
