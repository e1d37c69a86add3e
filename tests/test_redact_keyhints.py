"""Structured attributes whose key says what they hold (``customer.name``, ``telephone``,
``shipping_address.address1``, ``card.number``, ``birthDate``) are redacted whole, through the
real ``redact`` processor; OpenTelemetry's own keys with names and addresses are not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from errorgate import attributes as A
from errorgate.component import ComponentContext, Extensions
from errorgate.processors.redact import RedactConfig, RedactProcessor
from errorgate.processors.redaction.keyhints import hint_for
from errorgate.signals import Batch
from errorgate.telemetry import Telemetry
from tests.redaction_corpus import luhn_complete

CARD = luhn_complete("4", 16, __import__("random").Random(3))
PII = {
    "customer.name": "Linda Thompson",
    "billing_details.name": "Päivä T Suomalainen",
    "telephone": "611 1234",
    "contact.tel": "(0-607) 27533",
    "shipping_address.address1": "Rua Augusta",
    "streetAddress": "Skolegyden 33",
    "card.number": CARD,
    "birthDate": "1984-03-02",
}
KEPT = {
    "service.name": "checkout",
    "host.name": "api-3.eu-west-1.internal",
    "server.address": "db-1.internal",
    "team.name": "Payments Core",
    "product.name": "Gold Plan",
    "http.route": "/api/v1/users/{id}",
    "user.id": "u_4821",
    "customer.phone.verified": "yes",
}


def _processor(tmp_path: Path, packs: list[str]) -> RedactProcessor:
    ctx = ComponentContext("redact", tmp_path, Telemetry(), logging.getLogger("test"), Extensions({}))
    return RedactProcessor(RedactConfig.model_validate({"workers": 0, "packs": packs}), ctx)


def _run(processor: RedactProcessor, attrs: dict[str, str]) -> dict[str, str]:
    req = ExportLogsServiceRequest()
    log = req.resource_logs.add().scope_logs.add().log_records.add()
    log.body.string_value = "profile updated"
    for k, v in attrs.items():
        A.set_value(log.attributes, k, v)
    (batch,) = processor.process(Batch.of(req)).batches
    out = batch.request.resource_logs[0].scope_logs[0].log_records[0]  # type: ignore[union-attr]
    return {kv.key: kv.value.string_value for kv in out.attributes}


@pytest.fixture(scope="module")
def hipaa(tmp_path_factory: pytest.TempPathFactory) -> RedactProcessor:
    p = _processor(tmp_path_factory.mktemp("redact"), ["secrets", "pci", "gdpr", "hipaa"])
    yield p  # type: ignore[misc]
    p.shutdown()


def test_values_under_keys_that_say_what_they_are_are_redacted_whole(hipaa: RedactProcessor) -> None:
    # Twice: the second time every value is in the known-clean cache of free-standing values,
    # which must not let "Linda Thompson" under customer.name through.
    for _ in range(2):
        out = _run(hipaa, {**PII, **KEPT})
        for key, value in PII.items():
            if key == "card.number":
                assert out[key].endswith(value[-4:]) and value[:12] not in out[key], out[key]
            else:
                assert value not in out[key] and not any(
                    w in out[key] for w in value.split() if len(w) > 3
                ), (key, out[key])
        for key, value in KEPT.items():
            assert out[key] == value, key


def test_a_value_that_does_not_fit_the_key_is_left_to_the_recognizers(hipaa: RedactProcessor) -> None:
    out = _run(hipaa, {"customer.phone": "unknown", "customer.name": "n/a (guest checkout #4821)"})
    assert out["customer.phone"] == "unknown"
    assert out["customer.name"] == "n/a (guest checkout #4821)"


def test_hints_follow_the_packs(tmp_path: Path) -> None:
    """A hint acts only for entities the configured packs detect: with ``pci`` alone a card
    number is redacted, a name or a date of birth is not (no pack of this policy covers them)."""
    p = _processor(tmp_path, ["pci"])
    try:
        out = _run(p, {"birthDate": "1984-03-02", "customer.name": "Linda Thompson", "card.number": CARD})
    finally:
        p.shutdown()
    assert out["birthDate"] == "1984-03-02"
    assert out["customer.name"] == "Linda Thompson"
    assert CARD[:12] not in out["card.number"]


@pytest.mark.parametrize(
    ("key", "entity"),
    [
        ("cardholder_name", "PERSON"),
        ("card.holder_name", "PERSON"),
        ("user.full_name", "PERSON"),
        ("recipient", "PERSON"),
        ("msisdn", "PHONE_NUMBER"),
        ("customer.phoneNumber", "PHONE_NUMBER"),
        ("billing.address.line1", "STREET_ADDRESS"),
        ("address_line2", "STREET_ADDRESS"),
        ("paymentMethod.number", "CREDIT_CARD"),
        ("pan", "CREDIT_CARD"),
        ("patient.dob", "DATE_OF_BIRTH"),
        ("date_of_birth", "DATE_OF_BIRTH"),
        ("service.name", None),
        ("k8s.pod.name", None),
        ("server.address", None),
        ("network.peer.address", None),
        ("messaging.destination.name", None),
        ("db.collection.name", None),
        ("tenant.name", None),
        ("email.address", None),
    ],
)
def test_key_hints(key: str, entity: str | None) -> None:
    hint = hint_for(key)
    assert (hint.entity if hint else None) == entity
