"""Held-out leak of *structured* attributes: the split's people, streets, phones, cards and
dates of birth as attribute values of OTLP log records under realistic keys, beside decoy
attributes (ids, routes, versions, hosts, durations, codes), through the real ``redact``
processor (the packs a HIPAA-scoped service gets). Dev and test use different keys as well as
different locales.

    python -m bench.heldout.structured [dev|wide|test] [N]
"""

from __future__ import annotations

import logging
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faker import Faker
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.heldout.corpus import DEV_LOCALES, SEEDS, TEST_LOCALES, WIDE_LOCALES, _card, _dob, _full, _phone
from bench.heldout.corpus import _decoy as decoy_value
from bench.heldout.score import Report, leaked

_DIGITS = re.compile(r"\D+")


def card_leaked(value: str, output: str) -> bool:
    """More of the card number than PCI DSS allows to show (the last four digits) is left:
    any five of its digits in a row, separators ignored."""
    digits, out = _DIGITS.sub("", value), output.replace(" ", "").replace("-", "")
    return any(digits[i : i + 5] in out for i in range(len(digits) - 4))


# Entity -> attribute keys, per split. Dev: written for tuning. Test: field names of public
# schemas, taken as they are and never tuned on: Stripe (billing_details.*, card.number),
# Shopify (shipping_address.*, customer.phone), schema.org (streetAddress, telephone,
# birthDate), FHIR Patient (name.text, birthDate), Adyen (paymentMethod.number), Braintree
# (credit_card.number).
DEV_KEYS: dict[str, tuple[str, ...]] = {
    "PERSON": ("customer.name", "user.full_name", "recipient", "cardholder_name"),
    "STREET_ADDRESS": ("shipping.address", "billing.street", "address_line1"),
    "PHONE_NUMBER": ("customer.phone", "contact.tel", "phone_number"),
    "CREDIT_CARD": ("payment.card", "card_number", "pan"),
    "DATE_OF_BIRTH": ("patient.dob", "birth_date"),
}
TEST_KEYS: dict[str, tuple[str, ...]] = {
    "PERSON": ("billing_details.name", "shipping_address.name", "patient.name.text"),
    "STREET_ADDRESS": ("billing_details.address.line1", "shipping_address.address1", "streetAddress"),
    "PHONE_NUMBER": ("billing_details.phone", "customer.phone", "telephone"),
    "CREDIT_CARD": ("card.number", "paymentMethod.number", "credit_card.number"),
    "DATE_OF_BIRTH": ("birthDate", "patient.birthDate"),
}
DECOY_KEYS = {
    "id": "order.id", "uuid": "request.id", "route": "http.route", "version": "service.version",
    "host": "server.address", "duration": "retry.after", "code": "error.code",
}  # fmt: skip
PACKS = ["secrets", "pci", "gdpr", "hipaa"]


@dataclass
class Record:
    pii: list[tuple[str, str, str]] = field(default_factory=list)  # (entity, key, value)
    decoys: list[tuple[str, str]] = field(default_factory=list)  # (key, value)


class StructuredReport(Report):
    """``score.Report`` (leak per entity, decoys) without plain words: attributes have none."""

    def line(self, label: str) -> str:
        per = "  ".join(f"{e} {self.leak(e):6.1%}" for e in sorted(self.values))
        return f"{label:<22} structured leak {self.leak():6.1%}  [{per}]  decoys kept {self.decoys_kept}/{self.decoys}"


def _value(entity: str, fake: Faker, locale: str, region: str, split: str, rng: random.Random) -> str:
    if entity == "PERSON":
        return _full(fake, locale, rng)
    if entity == "STREET_ADDRESS":
        return str(fake.street_address()).replace("\n", ", ")
    if entity == "PHONE_NUMBER":
        return _phone(fake, region, rng)
    if entity == "CREDIT_CARD":
        return _card(rng)
    return _dob("dev" if split == "wide" else split, rng)


def build(split: str, n: int = 300) -> list[Record]:
    locales = {"dev": DEV_LOCALES, "wide": WIDE_LOCALES, "test": TEST_LOCALES}[split]
    keys = TEST_KEYS if split == "test" else DEV_KEYS
    rng = random.Random(SEEDS[split] + 100)
    fakers = {loc: Faker(loc) for loc in locales}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(SEEDS[split] + 100 + i)
    records = []
    for i in range(n):
        locale = list(locales)[i % len(locales)]
        record = Record()
        for entity in rng.sample(sorted(keys), 3):
            value = _value(entity, fakers[locale], locale, locales[locale], split, rng)
            record.pii.append((entity, rng.choice(keys[entity]), value))
        for slot in rng.sample(sorted(DECOY_KEYS), 3):
            record.decoys.append((DECOY_KEYS[slot], decoy_value(slot, rng)))
        records.append(record)
    return records


def _request(records: list[Record]) -> ExportLogsServiceRequest:
    from errorgate import attributes as A

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    A.set_value(rl.resource.attributes, "service.name", "patient-records")
    scope = rl.scope_logs.add()
    for record in records:
        log = scope.log_records.add()
        log.body.string_value = "profile updated"
        for _, key, value in record.pii:
            A.set_value(log.attributes, key, value)
        for key, value in record.decoys:
            A.set_value(log.attributes, key, value)
    return req


def _processor(data_dir: Path) -> Any:
    from errorgate.component import ComponentContext, Extensions
    from errorgate.processors.redact import RedactConfig, RedactProcessor
    from errorgate.telemetry import Telemetry

    ctx = ComponentContext("redact", data_dir, Telemetry(), logging.getLogger("bench.redact"), Extensions({}))
    return RedactProcessor(RedactConfig.model_validate({"workers": 0, "packs": PACKS}), ctx)


def evaluate(split: str, n: int = 300) -> StructuredReport:
    from bench.heldout.run import LOCALES
    from errorgate.processors.redaction.recognizers.names import held_out_locales
    from errorgate.signals import Batch

    records = build(split, n)
    with held_out_locales(LOCALES[split]), tempfile.TemporaryDirectory() as tmp:
        processor = _processor(Path(tmp))
        try:
            out = processor.process(Batch.of(_request(records)))
        finally:
            processor.shutdown()
    (batch,) = out.batches
    report = StructuredReport()
    logs = batch.request.resource_logs[0].scope_logs[0].log_records
    for record, log in zip(records, logs, strict=True):
        attrs = {kv.key: kv.value.string_value for kv in log.attributes}
        for entity, key, value in record.pii:
            report.values[entity] += 1
            judge = card_leaked if entity == "CREDIT_CARD" else leaked
            report.leaks[entity] += key in attrs and judge(value, attrs[key])
        for key, value in record.decoys:
            report.decoys += 1
            report.decoys_kept += attrs.get(key) == value
    return report


if __name__ == "__main__":
    split = sys.argv[1] if len(sys.argv) > 1 else "dev"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    print(evaluate(split, n).line(f"{split} errorgate"))
