"""Issue 15's classes of miss on real-world multilingual text, one test each, and the held-out
test split's thresholds on a quick subset.

Real Presidio and the real spaCy model; the engine has the packs a HIPAA-scoped service gets."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from bench.heldout.run import errorgate_report
from errorgate.processors.redact import RedactConfig
from errorgate.processors.redaction.engine import AnalysisEngine
from errorgate.processors.redaction.recognizers.names import held_out_locales
from tests.redaction_corpus import luhn_complete


def held_out_all_names() -> object:
    """The name lists without any locale's names: detection by shape and context alone."""
    from faker.config import AVAILABLE_LOCALES

    return held_out_locales(AVAILABLE_LOCALES)


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


def test_held_out_test_split_meets_the_issue_targets() -> None:
    """Issue 15's done-when on the whole held-out test split (other locales and templates than
    the dev and wide splits tuned on, the test locales' names held out of the name lists):
    overall leak <= 5 %, each entity <= 10 %, plain words >= 95 %, every decoy kept. Measured
    when first met: 2.6 % overall, STREET_ADDRESS 9.6 %, PHONE_NUMBER 5.1 %, CREDIT_CARD 4.3 %,
    PERSON 0.0 %, DOB 0.0 %; plain words 99.1 %."""
    report = errorgate_report("test", 500)
    assert report.leak() <= 0.05, report.as_dict()
    assert all(report.leak(e) <= 0.10 for e in report.values), report.as_dict()
    assert report.words_kept / report.words >= 0.95, report.as_dict()
    assert report.decoys_kept == report.decoys, report.as_dict()


# ------------------------------------------ misses found on the wide tuning split (round 2)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Payment declined for Amra Grob: card rejected", "Amra Grob"),
        ("Webhook for Leszek Ditschlerin timed out after 30s", "Leszek Ditschlerin"),
        ("Payment declined for Nikki de Leeuw: card rejected", "Nikki de Leeuw"),
        ("requester Joy McLeod reachable on mobile", "Joy McLeod"),
        ("customer O'Goldrick complained about release v5.21.8", "O'Goldrick"),
        ("regards Maria A Druart", "Maria A Druart"),
        ("customer Peace O Ibrahim says the parcel never arrived", "Peace O Ibrahim"),
    ],
)
def test_names_no_list_knows(engine: AnalysisEngine, text: str, name: str) -> None:
    """Capitalised words in running text that are no English word are a name even when no
    name list has them (the lists never hold every country's names)."""
    with held_out_all_names():
        assert covered(engine, text, name, "PERSON"), engine.analyze_one(text, True)


@pytest.mark.parametrize(
    ("text", "name"), [("dr Little called from the ward", "Little"), ("mrs Wood asked for a refund", "Wood")]
)
def test_surname_that_is_an_english_word_after_a_title(engine: AnalysisEngine, text: str, name: str) -> None:
    assert covered(engine, text, name, "PERSON"), engine.analyze_one(text, True)


@pytest.mark.parametrize(
    "text",
    [
        "Kafka Connect worker restarted after rebalance",
        "Grafana Loki query timed out",
        "ERROR Internal Server Error from upstream",
        "Payment Declined by issuer",
        "Spring Boot application started in 3.2 seconds",
    ],
)
def test_capitalised_english_and_product_words_are_kept(engine: AnalysisEngine, text: str) -> None:
    """Neither the proper-name check nor NER (which reads "Kafka Connect" as a person) takes
    product names and capitalised English words for people."""
    assert not [f for f in engine.analyze_one(text, True) if f.entity_type == "PERSON"], text


@pytest.mark.parametrize(
    ("text", "street"),
    [
        ("invoice sent to 73 Jennifer Colonnade", "73 Jennifer Colonnade"),
        ("the parcel never reached 7 AZADLIQ", "7 AZADLIQ"),
        ("delivery failed: X, 0 Collins Rotary, phone unknown", "0 Collins Rotary"),
        ("delivery failed: 650 route Daigle, phone unknown", "650 route Daigle"),
        ("address=Số 5 Ngõ 82 đường Huỳnh Văn Bánh build 7", "Số 5 Ngõ 82"),
        ("never reached pl. Maja 573", "pl. Maja 573"),
    ],
)
def test_street_shapes_of_more_countries(engine: AnalysisEngine, text: str, street: str) -> None:
    assert covered(engine, text, street, "STREET_ADDRESS"), engine.analyze_one(text, True)


def test_no_part_of_two_disagreeing_findings_is_left_in_clear(engine: AnalysisEngine) -> None:
    """Two recognizers read different ends of one value; the union is masked."""
    text = "delivery failed: Rachel C. Wilcox, 59307 Bell Forks, phone unknown"
    found = engine.analyze_one(text, True)
    masked = {i for f in found for i in range(f.start, f.end)}
    for value in ("Rachel", "Wilcox", "59307", "Bell", "Forks"):
        start = text.index(value)
        assert set(range(start, start + len(value))) <= masked, (value, found)


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("caller asked us to call back on 611-1234", "611-1234"),
        ("dr X called from (0-607) 27533 regarding case E92951", "(0-607) 27533"),
        ("caller asked us to call back on (0414) 37930", "(0414) 37930"),
        ("phone number 611 1234 is not reachable", "611 1234"),
    ],
)
def test_any_country_phone_grouping_right_after_a_phone_word(
    engine: AnalysisEngine, text: str, phone: str
) -> None:
    assert covered(engine, text, phone, "PHONE_NUMBER"), engine.analyze_one(text, True)


def test_an_id_further_after_a_phone_word_is_kept(engine: AnalysisEngine) -> None:
    text = "contacted her by phone 611 1234 about delivery 48943081"
    found = engine.analyze_one(text, True)
    assert "48943081" not in [text[f.start : f.end] for f in found], found


def test_old_maestro_range_after_a_card_word(engine: AnalysisEngine) -> None:
    number = luhn_complete("0604", 12, random.Random(15))
    text = f"Refund to card {number} approved"
    assert covered(engine, text, number, "CREDIT_CARD"), engine.analyze_one(text, True)


def test_held_out_structured_attributes_meet_the_issue_targets() -> None:
    """Issue 15's structured target: the test split's people, streets, phones, cards and dates
    of birth as attribute values under the field names of public schemas (Stripe, Shopify,
    schema.org, FHIR, Adyen, Braintree), beside decoy attributes, through the redact processor:
    leak <= 1 %, every decoy kept. Measured before key hints: 34.2 % (PERSON 63 %); after: 0 %."""
    from bench.heldout.structured import evaluate

    report = evaluate("test", 300)
    assert report.leak() <= 0.01, report.line("test")
    assert report.decoys_kept == report.decoys, report.line("test")
