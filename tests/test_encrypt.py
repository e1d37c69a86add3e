"""The encrypt processor through its registered factory: what is encrypted, what survives, and
that ciphertexts are bound to where they were written."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from errorgate import attributes
from errorgate.component import PROCESSORS, ComponentContext, Extensions, Processor
from errorgate.config import ConfigError, parse_config
from errorgate.extensions.keyring import KeyringExtension, open_keyring
from errorgate.governance.crypto import DecryptError
from errorgate.governance.keyring import Keyring
from errorgate.processors.encrypt import EncryptProcessor
from errorgate.signals import Batch
from errorgate.telemetry import Telemetry


@pytest.fixture(autouse=True)
def _no_master_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRORGATE_KEYRING", raising=False)


def make(
    tmp_path: Path, settings: dict | None = None, telemetry: Telemetry | None = None
) -> tuple[Processor, ComponentContext]:
    factory = PROCESSORS.get("encrypt")
    assert factory is not None
    config = factory.config_model.model_validate(settings or {})
    telemetry = telemetry or Telemetry()
    logger = logging.getLogger("test.encrypt")
    # As the gateway does: the keyring extension the encrypt settings imply, shared by type.
    ring = open_keyring(config.keyring_settings(), tmp_path, logger)
    ctx = ComponentContext(
        component_id="encrypt",
        data_dir=tmp_path,
        telemetry=telemetry,
        logger=logger,
        extensions=Extensions({"keyring": KeyringExtension(ring)}),
    )
    return factory.create(config, ctx), ctx


def spans_request(service: str = "checkout", tenant: str | None = "acme") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attributes.set_value(rs.resource.attributes, "service.name", service)
    if tenant is not None:
        attributes.set_value(rs.resource.attributes, "tenant.id", tenant)
    attributes.set_value(rs.resource.attributes, "user.region", "eu-west")
    ss = rs.scope_spans.add()
    span = ss.spans.add(name="POST /checkout", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    attributes.set_value(span.attributes, "enduser.id", "customer-8812")
    attributes.set_value(span.attributes, "user.email", "alice@example.com")
    attributes.set_value(span.attributes, "user.id", 8812)
    attributes.set_value(span.attributes, "user.profile", {"tier": "gold", "tags": ["vip", b"\x00\x01"]})
    attributes.set_value(span.attributes, "http.route", "/checkout")
    attributes.set_value(span.attributes, "errorgate.error.template", "card declined for <EMAIL>")
    event = span.events.add(name="login")
    attributes.set_value(event.attributes, "user.email", "alice@example.com")
    link = span.links.add(trace_id=b"\x03" * 16, span_id=b"\x04" * 8)
    attributes.set_value(link.attributes, "enduser.id", "customer-8812")
    return req


def keyring_of(ctx: ComponentContext) -> Keyring:
    shared = ctx.extension(KeyringExtension)
    assert shared is not None
    return shared.keyring


def test_default_rules_encrypt_identity_fields_and_leave_the_rest(tmp_path: Path) -> None:
    proc, ctx = make(tmp_path)
    req = spans_request()
    out = proc.process(Batch.of(req))
    assert len(out.batches) == 1
    span = out.batches[0].request.resource_spans[0].scope_spans[0].spans[0]
    attrs = attributes.to_dict(span.attributes)
    ring = keyring_of(ctx)
    for key in ("enduser.id", "user.email", "user.id", "user.profile"):
        assert str(attrs[key]).startswith(f"enc:v2:{ring.active_key_id()}:"), key
    assert attrs["http.route"] == "/checkout"
    assert attrs["errorgate.error.template"] == "card declined for <EMAIL>"
    assert span.name == "POST /checkout"
    ctx_ = {"signal": "traces", "tenant": "acme", "service": "checkout"}
    assert ring.decrypt_field(str(attrs["user.email"]), key="user.email", **ctx_) == "alice@example.com"
    assert ring.decrypt_field(str(attrs["enduser.id"]), key="enduser.id", **ctx_) == "customer-8812"
    # Non-string values come back as their JSON text.
    assert ring.decrypt_field(str(attrs["user.id"]), key="user.id", **ctx_) == "8812"
    profile = json.loads(ring.decrypt_field(str(attrs["user.profile"]), key="user.profile", **ctx_))
    assert profile == {"tier": "gold", "tags": ["vip", "AAE="]}
    # Events, links and resource attributes are covered too; service.name and tenant are not touched.
    event_value = str(attributes.get(span.events[0].attributes, "user.email"))
    assert ring.decrypt_field(event_value, key="user.email", **ctx_) == "alice@example.com"
    assert str(attributes.get(span.links[0].attributes, "enduser.id")).startswith("enc:v2:")
    resource = attributes.to_dict(out.batches[0].request.resource_spans[0].resource.attributes)
    assert resource["service.name"] == "checkout" and resource["tenant.id"] == "acme"
    assert ring.decrypt_field(str(resource["user.region"]), key="user.region", **ctx_) == "eu-west"
    # Nothing of the planted values is left anywhere in the serialized output.
    wire = out.batches[0].request.SerializeToString()
    for plain in (b"alice@example.com", b"customer-8812", b"eu-west", b"gold"):
        assert plain not in wire


def test_ciphertext_moved_to_another_field_or_tenant_fails(tmp_path: Path) -> None:
    proc, ctx = make(tmp_path)
    ring = keyring_of(ctx)
    acme = proc.process(Batch.of(spans_request(tenant="acme"))).batches[0].request
    token = str(attributes.get(acme.resource_spans[0].scope_spans[0].spans[0].attributes, "user.email"))
    assert (
        ring.decrypt_field(token, key="user.email", signal="traces", tenant="acme", service="checkout")
        == "alice@example.com"
    )
    with pytest.raises(DecryptError):
        ring.decrypt_field(token, key="enduser.id", signal="traces", tenant="acme", service="checkout")
    with pytest.raises(DecryptError):
        ring.decrypt_field(token, key="user.email", signal="traces", tenant="globex", service="checkout")
    # No tenant attribute: the tenant is "" (and still bound).
    bare = proc.process(Batch.of(spans_request(tenant=None))).batches[0].request
    token = str(attributes.get(bare.resource_spans[0].scope_spans[0].spans[0].attributes, "user.email"))
    assert (
        ring.decrypt_field(token, key="user.email", signal="traces", tenant="", service="checkout")
        == "alice@example.com"
    )


def test_already_encrypted_values_are_left_alone(tmp_path: Path) -> None:
    proc, _ = make(tmp_path)
    once = proc.process(Batch.of(spans_request())).batches[0].request
    first = once.SerializeToString()
    twice = proc.process(Batch.of(once)).batches[0].request
    assert twice.SerializeToString() == first


def test_rules_by_service_glob_key_glob_and_signal(tmp_path: Path) -> None:
    settings = {
        "rules": [
            {"services": ["check*"], "keys": ["http.route"], "signals": ["traces"]},
            {"services": ["billing"], "keys": ["user.email"]},
        ]
    }
    proc, _ = make(tmp_path, settings)
    checkout = proc.process(Batch.of(spans_request("checkout"))).batches[0].request
    attrs = attributes.to_dict(checkout.resource_spans[0].scope_spans[0].spans[0].attributes)
    assert str(attrs["http.route"]).startswith("enc:v2:")
    assert attrs["user.email"] == "alice@example.com"  # the billing rule does not apply to checkout
    billing = proc.process(Batch.of(spans_request("billing"))).batches[0].request
    attrs = attributes.to_dict(billing.resource_spans[0].scope_spans[0].spans[0].attributes)
    assert attrs["http.route"] == "/checkout"
    assert str(attrs["user.email"]).startswith("enc:v2:")


def test_protected_keys_are_never_encrypted(tmp_path: Path) -> None:
    proc, _ = make(tmp_path, {"rules": [{"keys": ["*"]}]})
    out = proc.process(Batch.of(spans_request())).batches[0].request
    resource = attributes.to_dict(out.resource_spans[0].resource.attributes)
    assert resource["service.name"] == "checkout" and resource["tenant.id"] == "acme"
    attrs = attributes.to_dict(out.resource_spans[0].scope_spans[0].spans[0].attributes)
    assert attrs["errorgate.error.template"] == "card declined for <EMAIL>"
    assert str(attrs["http.route"]).startswith("enc:v2:")


def test_logs_body_and_metric_point_attributes(tmp_path: Path) -> None:
    proc, ctx = make(tmp_path, {"rules": [{"keys": ["log.body", "user.*"]}]})
    ring = keyring_of(ctx)
    logs = ExportLogsServiceRequest()
    rl = logs.resource_logs.add()
    attributes.set_value(rl.resource.attributes, "service.name", "checkout")
    record = rl.scope_logs.add().log_records.add()
    record.body.string_value = "login failed for alice@example.com"
    attributes.set_value(record.attributes, "user.email", "alice@example.com")
    out = proc.process(Batch.of(logs)).batches[0].request.resource_logs[0].scope_logs[0].log_records[0]
    assert ring.decrypt_field(
        out.body.string_value, key="log.body", signal="logs", tenant="", service="checkout"
    ) == ("login failed for alice@example.com")
    email = str(attributes.get(out.attributes, "user.email"))
    assert (
        ring.decrypt_field(email, key="user.email", signal="logs", tenant="", service="checkout")
        == "alice@example.com"
    )

    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    attributes.set_value(rm.resource.attributes, "service.name", "checkout")
    metric = rm.scope_metrics.add().metrics.add(name="logins")
    point = metric.sum.data_points.add(as_int=3)
    attributes.set_value(point.attributes, "user.id", "u-1")
    attributes.set_value(point.attributes, "outcome", "fail")
    out_m = proc.process(Batch.of(metrics)).batches[0].request
    point_out = out_m.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    assert point_out.as_int == 3 and attributes.get(point_out.attributes, "outcome") == "fail"
    token = str(attributes.get(point_out.attributes, "user.id"))
    assert ring.decrypt_field(token, key="user.id", signal="metrics", tenant="", service="checkout") == "u-1"


def test_encrypted_values_are_counted_per_signal_and_service(tmp_path: Path) -> None:
    telemetry = Telemetry()
    proc, _ = make(tmp_path, telemetry=telemetry)
    proc.process(Batch.of(spans_request("checkout")))
    proc.process(Batch.of(spans_request("billing")))
    samples = {
        (s.labels["signal"], s.labels["service"]): s.value
        for family in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
        if family.name == "errorgate_encrypted_values"
        for s in family.samples
        if s.name.endswith("_total")
    }
    # Per request: resource user.region, span enduser.id/user.email/user.id/user.profile, event, link.
    assert samples == {("traces", "checkout"): 7.0, ("traces", "billing"): 7.0}


def test_keyring_created_in_data_dir_and_logged_without_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proc, ctx = make(tmp_path)
    assert (tmp_path / "keys" / "keyring.json").stat().st_mode & 0o777 == 0o600
    assert str(tmp_path / "keys") in caplog.text
    master = (tmp_path / "keys" / "master.key").read_text().strip()
    assert master not in caplog.text
    # A second processor (encrypt/b) in the same gateway shares the keyring extension.
    factory = PROCESSORS.get("encrypt")
    assert factory is not None
    second = factory.create(factory.config_model.model_validate({}), ctx)
    assert isinstance(second, EncryptProcessor) and second.keyring is keyring_of(ctx)
    assert proc.capabilities.thread_safe is True


def test_config_validation_names_the_key(tmp_path: Path) -> None:
    base = """
receivers: {otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}}
exporters: {debug: {}}
service: {pipelines: {traces: {receivers: [otlp], processors: [encrypt], exporters: [debug]}}}
processors:
  encrypt: %s
"""
    parse_config(base % "{}")
    with pytest.raises(ConfigError, match=r"processors\.encrypt\.rules\.0\.kyes: unknown key"):
        parse_config(base % "{rules: [{kyes: ['user.*']}]}")
    with pytest.raises(ConfigError, match=r"processors\.encrypt\.rules\.0\.keys"):
        parse_config(base % "{rules: [{keys: []}]}")


def test_the_byte_check_only_skips_requests_no_rule_can_select(tmp_path: Path) -> None:
    from errorgate.processors.encrypt import EncryptRule, _needles

    rules = [EncryptRule(keys=["enduser.*", "user.*"]), EncryptRule(keys=["card?number"], signals=["logs"])]
    assert _needles(rules, "traces") == (b"enduser.", b"user.")
    assert _needles(rules, "logs") == (b"card", b"enduser.", b"user.")
    assert _needles([EncryptRule(keys=["*.email"])], "traces") is None  # starts with a wildcard
    assert _needles([EncryptRule(keys=["log.*"])], "logs") is None  # selects log bodies
    assert _needles([EncryptRule(keys=["x"], signals=["logs"])], "metrics") == ()  # nothing to do

    proc, _ = make(tmp_path, {"rules": [{"keys": ["app.secret*"]}]})
    clean = spans_request()  # no app.secret* key: skipped without a walk, nothing changes
    before = clean.SerializeToString()
    proc.process(Batch.of(clean))
    assert clean.SerializeToString() == before
    hit = spans_request()
    span = hit.resource_spans[0].scope_spans[0].spans[0]
    attributes.set_value(span.attributes, "app.secret_token", "s3cr3t")
    proc.process(Batch.of(hit))
    assert str(attributes.get(span.attributes, "app.secret_token")).startswith("enc:v2:")
