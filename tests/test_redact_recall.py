"""Issue 15's classes of miss on real-world multilingual text, one test each, and the held-out
test split's thresholds on a quick subset.

Real Presidio and the real spaCy model; the engine has the packs a HIPAA-scoped service gets."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from bench.heldout.run import errorgate_report
from bench.heldout.score import Report
from errorgate.processors.redact import RedactConfig
from errorgate.processors.redaction.engine import AnalysisEngine
from tests.redaction_corpus import luhn_complete


@pytest.fixture(scope="module")
def engine() -> AnalysisEngine:
    config = RedactConfig(workers=0, packs=["secrets", "pci", "gdpr", "hipaa"])
    return AnalysisEngine(config.engine_settings(config.effective_policy()))


def covered(engine: AnalysisEngine, text: str, value: str, entity: str) -> bool:
    """A finding of ``entity`` covers all of ``value`` in ``text``."""
    start = text.index(value)
    return any(
        f.entity_type == entity and f.start <= start and start + len(value) <= f.end
        for f in engine.analyze_one(text, True)
    )


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Refund for Päivä T Suomalainen was rejected", "Päivä T Suomalainen"),
        ("ticket reopened by Dagmar M. Hauserová yesterday", "Dagmar M. Hauserová"),
        ("Shipment for Joaquín Ibáñez delayed in customs", "Joaquín Ibáñez"),
        ("Thanks, Søren Kjærgaard", "Søren Kjærgaard"),
    ],
)
def test_names_with_diacritics_and_initials(engine: AnalysisEngine, text: str, name: str) -> None:
    assert covered(engine, text, name, "PERSON")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("recipient Favian could not be notified", "Favian"),
        ("caller Astrid Holst asked for a refund", "Astrid Holst"),
        ("customer Ilkka reported the outage", "Ilkka"),
        ("patient Wojtek was discharged", "Wojtek"),
    ],
)
def test_single_given_name_after_a_role_word(engine: AnalysisEngine, text: str, name: str) -> None:
    assert covered(engine, text, name, "PERSON")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("doctor Satou approved the request", "Satou"),
        ("Dr. Okonkwo is on call", "Okonkwo"),
        ("mrs Lindqvist wants her invoice", "Lindqvist"),
        ("Herr Brückner hat angerufen", "Brückner"),
    ],
)
def test_surname_after_a_title(engine: AnalysisEngine, text: str, name: str) -> None:
    assert covered(engine, text, name, "PERSON")


@pytest.mark.parametrize(
    ("text", "street"),
    [
        ("parcel returned from Skolegyden 33, please verify", "Skolegyden 33"),
        ("deliver to Rua Mathias Moritz 723 before noon", "Rua Mathias Moritz 723"),
        ("billing address 4412 Harbor View Road Suite 753 rejected", "4412 Harbor View Road Suite 753"),
        ("geocoder rejected 'Lindenstraße 12a'", "Lindenstraße 12a"),
        ("sent to Calle de Alcalá 45 yesterday", "Calle de Alcalá 45"),
        ("moved to 12, rue des Lilas", "12, rue des Lilas"),
        # number after the street, no street word: found by an address word or verb before it
        ("parcel never reached Svibovac 33", "Svibovac 33"),
        ("InvalidAddress: 'Kožarska 4a' rejected", "Kožarska 4a"),
        ("ship to Na Příkopě 12 today", "Na Příkopě 12"),
        # street words of other languages, unit words, postcodes and cities
        ("Kossuth Lajos utca 12. is closed", "Kossuth Lajos utca 12"),
        ("Atatürk Cad. No:12 D:3 bulunamadı", "Atatürk Cad. No:12 D:3"),
        ("Mannerheimintie 12 A 5 not found", "Mannerheimintie 12 A 5"),
        ("Strada Gloria, 87 Appartamento 8 unknown", "Strada Gloria, 87 Appartamento 8"),
        ("Storgata 5, 0155 Oslo", "Storgata 5, 0155 Oslo"),
        ("Vodičkova 681/14, 110 00 Praha", "Vodičkova 681/14, 110 00 Praha"),
        ("sent to Flat 36, Patricia Park", "Flat 36, Patricia Park"),
        ("H.No. 12-3-45, Banjara Hills", "H.No. 12-3-45, Banjara Hills"),
        ("courier at Calle 6ª # 7-81 Sur", "Calle 6ª # 7-81 Sur"),
        ("returned from PO Box 80", "PO Box 80"),
        ("geocoder: 新生路87號", "新生路87號"),
        ("geocoder: 芝公園1丁目2番3号", "芝公園1丁目2番3号"),
        ("geocoder: пер. Садовый, д. 594 стр. 5", "пер. Садовый, д. 594 стр. 5"),
    ],
)
def test_international_street_addresses(engine: AnalysisEngine, text: str, street: str) -> None:
    assert covered(engine, text, street, "STREET_ADDRESS")


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("please call me at 0612 34 56 78", "0612 34 56 78"),
        ("mobile 040-123-45-67 unreachable", "040-123-45-67"),
        ("phone: 06.12.34.56.78", "06.12.34.56.78"),
        ("texting 070 123 45 67 failed", "070 123 45 67"),
    ],
)
def test_national_phone_formats_with_context(engine: AnalysisEngine, text: str, phone: str) -> None:
    assert covered(engine, text, phone, "PHONE_NUMBER")


def test_street_shapes_keep_telemetry_words(engine: AnalysisEngine) -> None:
    """Context and shape rules stay off versions, steps, hosts, routes and durations."""
    for text in (
        "upgrade to Python 3 failed, moved to Version 12",
        "shipped to Node 18 runtime on api-7.eu-west-1.internal",
        "address Line 2 of config is empty",
        "retry 3 of 5 after 1532ms on /api/v1/orders/{id}/status",
        "uuid 3f2a1c9e-7d4b-4e8a-9c1d-2b3e4f5a6b7c build 2024-03-02",
    ):
        assert not [f for f in engine.analyze_one(text, True) if f.entity_type == "STREET_ADDRESS"], text


def test_national_phone_shapes_without_context_are_kept(engine: AnalysisEngine) -> None:
    for text in ("retry 12 34 56 78 ms", "build 2024.05.01.17", "took 1.234.567 ns"):
        assert not [f for f in engine.analyze_one(text, True) if f.entity_type == "PHONE_NUMBER"], text


@pytest.mark.parametrize(
    ("prefix", "length"),
    [("3530", 16), ("5018", 16), ("6304", 13), ("36", 14), ("3000", 14), ("6240", 16), ("6011", 16),
     ("34", 15), ("2131", 15), ("1800", 15), ("6759", 19)],
)  # fmt: skip
def test_issuer_complete_cards_with_luhn(engine: AnalysisEngine, prefix: str, length: int) -> None:
    number = luhn_complete(prefix, length, random.Random(int(prefix) + length))
    assert covered(engine, f"card {number} declined", number, "CREDIT_CARD")
    bad = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert not covered(engine, f"card {bad} declined", bad, "CREDIT_CARD")


@pytest.mark.parametrize(
    ("text", "dob"),
    [
        ("patient born 1984-03-02 admitted", "1984-03-02"),
        ("DOB 02/03/1984 does not match", "02/03/1984"),
        ("date of birth: March 2, 1984", "March 2, 1984"),
        ("born on 2 March 1984 in Oslo", "2 March 1984"),
        ("geboren am 02.03.1984", "02.03.1984"),
    ],
)
def test_date_of_birth_next_to_born_or_dob(engine: AnalysisEngine, text: str, dob: str) -> None:
    assert covered(engine, text, dob, "DATE_OF_BIRTH")


def test_plain_dates_and_decoys_are_kept(engine: AnalysisEngine) -> None:
    for text in (
        "deployed 2024-03-02 12:00:01 on api-7.eu-west-1.internal",
        "release v2.14.3 took 1532ms on /api/v1/orders/{id}/status",
        "Payment Service returned ERR_4021 for order 12345678",
        "consumer lag exceeded 30s on partition 7 of topic orders",
    ):
        assert list(engine.analyze_one(text, True)) == [], text


# ----------------------------------------------------------------- packs follow the catalog


def test_hipaa_pack_follows_the_catalog_scope(tmp_path: Path) -> None:
    from errorgate.governance.catalog import load_catalog

    bundled = load_catalog()  # marks patient-records as hipaa-scoped
    config = RedactConfig(workers=0)
    assert "hipaa" not in config.packs
    assert "hipaa" in [p.name for p in config.effective_policy(bundled).packs]
    assert "DATE_OF_BIRTH" in config.effective_policy(bundled).covered_entities()
    path = tmp_path / "services.yaml"
    path.write_text("services:\n  shop: {owner: web, tier: 2, compliance: [pci]}\n")
    assert "hipaa" not in [p.name for p in config.effective_policy(load_catalog(path)).packs]
    assert "hipaa" not in [
        p.name for p in RedactConfig(workers=0, scope_packs={}).effective_policy(bundled).packs
    ]


def test_the_redact_processor_reads_the_catalog(tmp_path: Path) -> None:
    from errorgate.component import ComponentContext
    from errorgate.processors.redact import RedactProcessor, create_redact
    from errorgate.telemetry import Telemetry

    context = ComponentContext("redact", tmp_path, Telemetry(), logging.getLogger("t"))
    processor = create_redact(RedactConfig(workers=0, ner=False), context)
    try:
        assert isinstance(processor, RedactProcessor)
        assert "hipaa" in [p.name for p in processor.policy.packs]
    finally:
        processor.shutdown()


# ----------------------------------------------------------------- held-out test split


def _held_out_test_report() -> Report:
    """200 items of the test split, scored with the test locales' names held out of the name
    lists (the corpus' people come from the same Faker lists)."""
    return errorgate_report("test", 200)


def test_held_out_test_split_does_not_regress() -> None:
    """A fixed subset of the held-out test split (other locales and templates than the dev
    split tuned on), at the levels reached when it was first scored: a regression guard."""
    report = _held_out_test_report()
    assert report.leak() <= 0.08, report.as_dict()
    assert all(report.leak(e) <= 0.15 for e in report.values), report.as_dict()
    assert report.words_kept / report.words >= 0.95
    assert report.decoys_kept == report.decoys


@pytest.mark.xfail(
    strict=True,
    reason=(
        "issue 15's done-when not reached on the test split with the test locales' names held out "
        "of the name lists: overall leak 9.1 % (7.5 % on this subset) > 5 %; on the whole split "
        "STREET_ADDRESS 14.7 % and PERSON 10.0 % are at or over 10 %"
    ),
)
def test_held_out_test_split_meets_the_issue_targets() -> None:
    report = _held_out_test_report()
    assert report.leak() <= 0.05, report.as_dict()
    assert all(report.leak(e) <= 0.10 for e in report.values), report.as_dict()
