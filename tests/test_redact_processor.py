"""The ``redact`` processor on real OTLP: every location, every action, key and IP policy,
audit attributes and metrics, fail-closed behaviour, thread safety."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import generate_latest
from pydantic import ValidationError

from errorgate import attributes as A
from errorgate.component import ComponentContext, Extensions
from errorgate.config import ConfigError, parse_config
from errorgate.extensions.keyring import KeyringExtension
from errorgate.processors.redact import RedactConfig, RedactProcessor
from errorgate.processors.redaction.actions import Keyring
from errorgate.processors.redaction.engine import AnalysisEngine
from errorgate.processors.redaction.pool import Detector
from errorgate.signals import Batch
from errorgate.telemetry import Telemetry

EMAIL = "jane.doe@example.com"
CARD = "5555555555554444"
SSN = "123-45-6789"


class LocalKeyring:
    """A minimal implementation of the keyring Protocol for tests (the real one lives in governance)."""

    def __init__(self, secret: bytes = b"s" * 32) -> None:
        self.secret = secret

    def hmac_key(self, purpose: str) -> tuple[str, bytes]:
        return "k1", hmac.new(self.secret, purpose.encode(), hashlib.sha256).digest()

    def encrypt_field(self, plaintext: str, *, key: str, signal: str, tenant: str, service: str) -> str:
        nonce = b"\x00" * 12  # fixed only because the test decrypts it right away
        ad = f"{tenant}|{signal}|{key}".encode()
        blob = AESGCM(self.secret).encrypt(nonce, plaintext.encode(), ad)
        return "enc:v1:k1:" + base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def decrypt(self, token: str, *, key: str, signal: str, tenant: str) -> str:
        blob = base64.urlsafe_b64decode(token.split(":", 3)[3] + "==")
        return AESGCM(self.secret).decrypt(b"\x00" * 12, blob, f"{tenant}|{signal}|{key}".encode()).decode()


def make(tmp_path: Path, keyring: object | None = None, **settings: object) -> RedactProcessor:
    # redact uses only the keyed actions' calls of the keyring extension's keyring: a stub will do.
    shared = {"keyring": KeyringExtension(cast(Any, keyring))} if keyring is not None else {}
    ctx = ComponentContext(
        "redact", tmp_path, Telemetry(), logging.getLogger("test.redact"), Extensions(shared)
    )
    config = RedactConfig.model_validate({"workers": 0, **settings})
    return RedactProcessor(config, ctx)


def metrics_text(proc: RedactProcessor) -> str:
    return generate_latest(proc.context.telemetry.registry).decode()


def trace_request(kind: int = Span.SPAN_KIND_SERVER) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    A.set_value(rs.resource.attributes, "service.name", "checkout")
    A.set_value(rs.resource.attributes, "owner.contact", f"mail {EMAIL}")
    ss = rs.scope_spans.add()
    A.set_value(ss.scope.attributes, "scope.note", f"ssn {SSN}")
    span = ss.spans.add()
    span.trace_id = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
    span.span_id = bytes.fromhex("00f067aa0ba902b7")
    span.kind = kind  # type: ignore[assignment]
    span.name = f"GET /users/{EMAIL}"
    A.set_value(span.attributes, "http.route", "/users/{email}")
    A.set_value(
        span.attributes,
        "url.full",
        f"https://shop.example.com/cb?email={EMAIL}&trace=4bf92f3577b34da6a3ce929d0e0e4736",
    )
    A.set_value(span.attributes, "payment", {"card": int(CARD), "notes": [f"contact {EMAIL}", "ok"]})
    A.set_value(span.attributes, "service.version", "1.2.3.4")
    span.status.message = f"declined for card {CARD}"
    event = span.events.add()
    event.name = f"notify {EMAIL}"
    A.set_value(event.attributes, "exception.message", f"invalid ssn {SSN}")
    link = span.links.add()
    A.set_value(link.attributes, "origin.user", f"{EMAIL}")
    return req


# ----------------------------------------------------------------- locations


def test_every_trace_location_is_redacted_and_decoys_survive(tmp_path: Path) -> None:
    proc = make(tmp_path)
    out = proc.process(Batch.of(trace_request()))
    req = out.batches[0].request
    rs = req.resource_spans[0]
    ss = rs.scope_spans[0]
    span = ss.spans[0]
    assert A.get(rs.resource.attributes, "owner.contact") == "mail <EMAIL_ADDRESS>"
    assert A.get(ss.scope.attributes, "scope.note") == "ssn <US_SSN>"
    assert span.name == "GET /users/<EMAIL_ADDRESS>"
    assert A.get(span.attributes, "url.full") == (
        "https://shop.example.com/cb?email=<EMAIL_ADDRESS>&trace=4bf92f3577b34da6a3ce929d0e0e4736"
    )
    # An int that is a card number becomes the partially masked string.
    assert A.get(span.attributes, "payment") == {
        "card": "************4444",
        "notes": ["contact <EMAIL_ADDRESS>", "ok"],
    }
    assert span.status.message == "declined for card ************4444"
    assert span.events[0].name == "notify <EMAIL_ADDRESS>"
    assert A.get(span.events[0].attributes, "exception.message") == "invalid ssn <US_SSN>"
    assert A.get(span.links[0].attributes, "origin.user") == "<EMAIL_ADDRESS>"
    # Decoys: allowlisted keys, ids, version.
    assert A.get(rs.resource.attributes, "service.name") == "checkout"
    assert A.get(span.attributes, "http.route") == "/users/{email}"
    assert A.get(span.attributes, "service.version") == "1.2.3.4"
    assert span.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    # Audit: resource + scope + 8 on the span itself.
    assert A.get(span.attributes, "errorgate.redaction.count") == 10
    assert A.get(span.attributes, "errorgate.redaction.types") == "CREDIT_CARD,EMAIL_ADDRESS,US_SSN"
    serialized = req.SerializeToString()
    for raw in (EMAIL.encode(), CARD.encode(), SSN.encode()):
        assert raw not in serialized


def test_log_bodies_string_and_structured(tmp_path: Path) -> None:
    proc = make(tmp_path)
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    A.set_value(rl.resource.attributes, "service.name", "billing")
    sl = rl.scope_logs.add()
    r1 = sl.log_records.add()
    r1.body.string_value = f"Refund for Maria Garcia sent to {EMAIL}"
    A.set_value(r1.attributes, "user.id", "u-1842")
    r2 = sl.log_records.add()
    r2.body.CopyFrom(
        A.to_any(
            {
                "message": f"password=hunter2hunter2 for {EMAIL}",
                "ids": [CARD, "E1042"],
                "user": {"email": EMAIL},
            }
        )
    )
    r3 = sl.log_records.add()
    r3.body.string_value = "cache warmed in 35ms"
    out = proc.process(Batch.of(req)).batches[0].request
    records = out.resource_logs[0].scope_logs[0].log_records
    assert records[0].body.string_value == "Refund for <PERSON> sent to <EMAIL_ADDRESS>"
    assert A.get(records[0].attributes, "user.id") == "u-1842"
    assert A.to_python(records[1].body) == {
        "message": "password=<PASSWORD> for <EMAIL_ADDRESS>",
        "ids": ["************4444", "E1042"],
        "user": {"email": "<REDACTED>"},  # gdpr pack blocks *.email keys outright
    }
    assert (
        A.get(records[1].attributes, "errorgate.redaction.types")
        == "BLOCKED_KEY,CREDIT_CARD,EMAIL_ADDRESS,PASSWORD"
    )
    # Nothing found, nothing added.
    assert records[2].body.string_value == "cache warmed in 35ms"
    assert not A.has(records[2].attributes, "errorgate.redaction.count")


def test_metric_data_point_attributes(tmp_path: Path) -> None:
    proc = make(tmp_path)
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    A.set_value(rm.resource.attributes, "service.name", "api")
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = "http.server.request.count"
    point = metric.sum.data_points.add()
    point.as_int = 3
    A.set_value(point.attributes, "client.address", "203.0.113.50")
    A.set_value(point.attributes, "http.route", "/orders/{id}")
    A.set_value(point.attributes, "user_email", EMAIL)
    out = proc.process(Batch.of(req)).batches[0].request
    attrs = out.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0].attributes
    assert A.to_dict(attrs) == {
        "client.address": "<IP_ADDRESS>",
        "http.route": "/orders/{id}",
        "user_email": "<EMAIL_ADDRESS>",
    }  # no errorgate.* attribute on data points: it would split the time series


# ----------------------------------------------------------------- key and IP policy


def test_block_and_allow_keys(tmp_path: Path) -> None:
    proc = make(tmp_path, allow_keys=["internal.debug.*"], block_keys=["x.customer_ref"])
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    A.set_value(span.attributes, "http.request.header.authorization", ["Basic dXNlcjpwYXNz"])
    A.set_value(span.attributes, "db.password", 12345)
    A.set_value(span.attributes, "http.request.header.cookie", "a=b")
    A.set_value(span.attributes, "x.customer_ref", "CR-77")
    A.set_value(span.attributes, "internal.debug.sample", EMAIL)
    A.set_value(span.attributes, "gen_ai.usage.input_tokens", 1234)
    proc.process(Batch.of(req))
    got = A.to_dict(span.attributes)
    assert got["http.request.header.authorization"] == "<REDACTED>"
    assert got["db.password"] == "<REDACTED>"
    assert got["http.request.header.cookie"] == "<REDACTED>"
    assert got["x.customer_ref"] == "<REDACTED>"
    assert got["internal.debug.sample"] == EMAIL  # explicitly allowed: never scanned
    assert got["gen_ai.usage.input_tokens"] == 1234
    assert got["errorgate.redaction.count"] == 4


@pytest.mark.parametrize(
    ("kind", "peer_redacted"), [(Span.SPAN_KIND_SERVER, True), (Span.SPAN_KIND_CLIENT, False)]
)
def test_ip_policy_end_users_redacted_infrastructure_kept(
    tmp_path: Path, kind: int, peer_redacted: bool
) -> None:
    proc = make(tmp_path)
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.kind = kind  # type: ignore[assignment]
    A.set_value(span.attributes, "client.address", "203.0.113.9")
    A.set_value(span.attributes, "source.address", "198.51.100.23")
    A.set_value(span.attributes, "network.peer.address", "198.51.100.4")
    A.set_value(span.attributes, "server.address", "10.0.0.5")
    A.set_value(span.attributes, "host.ip", "10.0.0.6")
    A.set_value(span.attributes, "server.socket.address", "10.0.0.7")
    A.set_value(span.attributes, "note", "forwarded for 81.2.69.160")
    proc.process(Batch.of(req))
    got = A.to_dict(span.attributes)
    assert got["client.address"] == "<IP_ADDRESS>"
    assert got["source.address"] == "<IP_ADDRESS>"
    assert got["note"] == "forwarded for <IP_ADDRESS>"
    assert got["network.peer.address"] == ("<IP_ADDRESS>" if peer_redacted else "198.51.100.4")
    assert (got["server.address"], got["host.ip"], got["server.socket.address"]) == (
        "10.0.0.5",
        "10.0.0.6",
        "10.0.0.7",
    )


def test_ip_redaction_can_be_switched_off(tmp_path: Path) -> None:
    proc = make(tmp_path, ip={"redact": False})
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    A.set_value(span.attributes, "client.address", "203.0.113.9")
    proc.process(Batch.of(req))
    assert A.get(span.attributes, "client.address") == "203.0.113.9"


# ----------------------------------------------------------------- actions


def _span_with(attrs: dict[str, object]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    A.set_value(rs.resource.attributes, "service.name", "svc")
    span = rs.scope_spans.add().spans.add()
    span.name = "op"
    for k, v in attrs.items():
        A.set_value(span.attributes, k, v)  # type: ignore[arg-type]
    return req


def test_actions_mask_partial_hash_token_encrypt_drop(tmp_path: Path) -> None:
    keyring = LocalKeyring()
    assert isinstance(keyring, Keyring)
    proc = make(
        tmp_path,
        keyring=keyring,
        entities={
            "EMAIL_ADDRESS": {"action": "token"},
            "US_SSN": {"action": "hash"},
            "PHONE_NUMBER": {"action": "encrypt"},
            "IP_ADDRESS": {"action": "drop"},
        },
    )
    req = _span_with(
        {
            "a": f"to {EMAIL}",
            "b": f"again {EMAIL}",
            "c": f"ssn {SSN}",
            "d": f"card {CARD}",
            "e": "call +1 202-555-0143",
            "client.address": "203.0.113.9",
            "f": ["from 203.0.113.9"],
            "g": "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl",
        }
    )
    batch = Batch.of(req, tenant="acme")
    span = proc.process(batch).batches[0].request.resource_spans[0].scope_spans[0].spans[0]
    got = A.to_dict(span.attributes)
    token = got["a"].removeprefix("to ")  # type: ignore[union-attr]
    assert token.startswith("tok:EMAIL_ADDRESS:") and len(token) == len("tok:EMAIL_ADDRESS:") + 32
    assert got["b"] == f"again {token}"  # deterministic: equal inputs join
    expected_hash = hmac.new(keyring.hmac_key("redact-hash")[1], SSN.encode(), hashlib.sha256).hexdigest()
    assert got["c"] == f"ssn {expected_hash}"
    assert got["d"] == "card ************4444"
    enc = got["e"].removeprefix("call ")  # type: ignore[union-attr]
    assert enc.startswith("enc:v1:k1:")
    assert keyring.decrypt(enc, key="e", signal="traces", tenant="acme") == "+1 202-555-0143"
    with pytest.raises(InvalidTag):  # bound to its attribute key: moving it elsewhere fails
        keyring.decrypt(enc, key="other", signal="traces", tenant="acme")
    assert "client.address" not in got  # dropped
    assert got["f"] == ["from <IP_ADDRESS>"]  # an array element cannot be dropped alone: masked
    assert got["g"] == "jwt <JWT>"
    # Other keys give other tokens: no key, no join.
    other = make(tmp_path, keyring=LocalKeyring(b"t" * 32), entities={"EMAIL_ADDRESS": {"action": "token"}})
    span2 = (
        other.process(Batch.of(_span_with({"a": EMAIL})))
        .batches[0]
        .request.resource_spans[0]
        .scope_spans[0]
        .spans[0]
    )
    assert A.get(span2.attributes, "a") != token


@pytest.mark.parametrize("action", ["hash", "token", "encrypt"])
def test_keyed_actions_without_keyring_are_config_errors(tmp_path: Path, action: str) -> None:
    with pytest.raises(ConfigError, match=rf"entities\.EMAIL_ADDRESS\.action: '{action}' needs a keyring"):
        make(tmp_path, entities={"EMAIL_ADDRESS": {"action": action}})


def test_hipaa_pack_tokens_need_a_keyring(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"HEALTH_PLAN_ID\.action: 'token' needs a keyring"):
        make(tmp_path, packs=["secrets", "hipaa"], entities={"HEALTH_PLAN_ID": {"action": "token"}})
    proc = make(
        tmp_path,
        keyring=LocalKeyring(),
        packs=["secrets", "hipaa"],
        ner=False,
        entities={"MEDICAL_RECORD_NUMBER": {"action": "token"}},
    )
    span = proc.process(Batch.of(_span_with({"n": "patient mrn 00123456 admitted"}))).batches[0].request
    value = A.get(span.resource_spans[0].scope_spans[0].spans[0].attributes, "n")
    assert isinstance(value, str) and value.startswith("patient tok:MEDICAL_RECORD_NUMBER:")


# ----------------------------------------------------------------- fail closed


class FailingEngine(AnalysisEngine):
    """A real engine that raises on values containing a marker (what a crashing recognizer does)."""

    def _patterns(self, value: str, free_text: bool) -> list:  # type: ignore[override]
        if "EXPLODE" in value:
            raise RuntimeError("recognizer crashed")
        return super()._patterns(value, free_text)


def test_failed_analysis_masks_the_item_and_counts_it(tmp_path: Path) -> None:
    proc = make(tmp_path)
    proc.detector._engine = FailingEngine(proc.detector.settings)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    A.set_value(rs.resource.attributes, "service.name", "svc")
    ss = rs.scope_spans.add()
    bad = ss.spans.add()
    bad.name = "checkout"
    A.set_value(bad.attributes, "q", f"EXPLODE {EMAIL}")
    A.set_value(bad.attributes, "plain", "nothing here")
    A.set_value(bad.attributes, "http.route", "/cart")
    good = ss.spans.add()
    good.name = "checkout"
    A.set_value(good.attributes, "q", f"fine {EMAIL}")
    proc.process(Batch.of(req))
    assert A.to_dict(bad.attributes) == {
        "q": "<REDACTION_FAILED>",
        "plain": "<REDACTION_FAILED>",
        "http.route": "/cart",  # allowlisted: never scanned, so never at risk
        "errorgate.redaction.failed": True,
    }
    assert bad.name == "<REDACTION_FAILED>"
    assert A.get(good.attributes, "q") == "fine <EMAIL_ADDRESS>"
    assert not A.has(good.attributes, "errorgate.redaction.failed")
    assert 'errorgate_redaction_failures_total{signal="traces"} 1.0' in metrics_text(proc)
    # A failure is not cached: the next batch tries again.
    assert ("EXPLODE " + EMAIL, False) not in proc.detector.cache._data


def test_keyring_failure_fails_closed(tmp_path: Path) -> None:
    class BrokenKeyring(LocalKeyring):
        def encrypt_field(self, plaintext: str, *, key: str, signal: str, tenant: str, service: str) -> str:
            raise OSError("kms unavailable")

    proc = make(tmp_path, keyring=BrokenKeyring(), entities={"EMAIL_ADDRESS": {"action": "encrypt"}})
    span = (
        proc.process(Batch.of(_span_with({"a": EMAIL})))
        .batches[0]
        .request.resource_spans[0]
        .scope_spans[0]
        .spans[0]
    )
    assert A.get(span.attributes, "a") == "<REDACTION_FAILED>"
    assert A.get(span.attributes, "errorgate.redaction.failed") is True


# ----------------------------------------------------------------- audit, metrics, logs


def test_metrics_count_by_service_type_and_rule_without_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proc = make(tmp_path)
    proc.process(Batch.of(trace_request()))
    text = metrics_text(proc)
    assert (
        'errorgate_redactions_total{entity_type="EMAIL_ADDRESS",rule="TelemetryEmailRecognizer:email",service="checkout"} 6.0'
        in text
    )
    assert (
        'errorgate_redactions_total{entity_type="CREDIT_CARD",rule="CardRecognizer:card_luhn_bin",service="checkout"} 2.0'
        in text
    )
    for raw in (EMAIL, CARD, SSN, "jane"):
        assert raw not in text
        assert raw not in caplog.text


def test_label_cardinality_is_capped(tmp_path: Path) -> None:
    proc = make(tmp_path)
    proc.context.telemetry.cap.set_cap("service", 2)
    for i in range(4):
        req = _span_with({"a": EMAIL})
        A.set_value(req.resource_spans[0].resource.attributes, "service.name", f"svc{i}")
        proc.process(Batch.of(req))
    text = metrics_text(proc)
    assert 'service="_other"} 2.0' in text
    assert 'service="svc3"' not in text


def test_concurrent_calls_are_safe_and_consistent(tmp_path: Path) -> None:
    proc = make(tmp_path)
    assert RedactProcessor.capabilities.thread_safe is True
    outputs: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                outputs.append(proc.process(Batch.of(trace_request())).batches[0].request.SerializeToString())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(outputs) == 40 and len(set(outputs)) == 1
    assert "errorgate_redactions_total" in metrics_text(proc)


# ----------------------------------------------------------------- config


def test_config_through_the_collector_shaped_file() -> None:
    text = """
receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:0}}}}
processors:
  redact: {}
  redact/strict: {packs: [secrets, pci, gdpr, hipaa], score_threshold: 0.7, workers: 0}
exporters: {file: {path: /tmp/x}}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [redact], exporters: [file]}
"""
    config = parse_config(text)
    assert isinstance(config.processors["redact"], RedactConfig)
    assert config.processors["redact"].packs == ["secrets", "pci", "gdpr"]
    assert config.processors["redact/strict"].score_threshold == 0.7
    with pytest.raises(ConfigError, match=r"processors\.redact\.scan_everything: unknown key"):
        parse_config(text.replace("redact: {}", "redact: {scan_everything: true}"))
    with pytest.raises(ConfigError, match=r"processors\.redact\.packs: Value error, 'sox' not found"):
        parse_config(text.replace("redact: {}", "redact: {packs: [sox]}"))
    with pytest.raises(ConfigError, match=r"processors\.redact\.score_threshold"):
        parse_config(text.replace("redact: {}", "redact: {score_threshold: 0.2}"))


def test_unknown_pack_and_recognizer_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="'sox' not found"):
        make(tmp_path, packs=["sox"])
    with pytest.raises(ConfigError, match="disable_recognizers: unknown recognizer"):
        make(tmp_path, disable_recognizers=["NoSuchRecognizer"])


def test_disabling_a_recognizer(tmp_path: Path) -> None:
    proc = make(tmp_path, disable_recognizers=["IpAddressRecognizer"])
    span = proc.process(Batch.of(_span_with({"client.address": "203.0.113.9"}))).batches[0].request
    assert A.get(span.resource_spans[0].scope_spans[0].spans[0].attributes, "client.address") == "203.0.113.9"


def test_injected_detector_is_used(tmp_path: Path) -> None:
    config = RedactConfig(workers=0)
    detector = Detector(
        config.engine_settings(config.effective_policy()), workers=0, cache_size=10, timeout=5
    )
    ctx = ComponentContext("redact", tmp_path, Telemetry(), logging.getLogger("t"))
    proc = RedactProcessor(config, ctx, detector=detector)
    proc.process(Batch.of(_span_with({"a": EMAIL})))
    assert detector.cache.misses >= 1 and len(detector.cache) >= 1
