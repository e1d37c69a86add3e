"""GDPR national ids (``NationalIdRecognizer``): each format found with a valid check digit and
left alone with a wrong one; all-digit formats only after their label."""

from __future__ import annotations

import pytest

from errorgate.processors.redact import RedactConfig
from errorgate.processors.redaction.engine import AnalysisEngine


@pytest.fixture(scope="module")
def engine() -> AnalysisEngine:
    config = RedactConfig(workers=0, ner=False)
    return AnalysisEngine(config.engine_settings(config.effective_policy()))


def ids(engine: AnalysisEngine, text: str) -> list[tuple[str, str]]:
    return [
        (text[f.start : f.end], f.rule.split(":")[-1])
        for f in engine.analyze_one(text, False)
        if f.entity_type == "NATIONAL_ID"
    ]


def tamper(value: str) -> str:
    """The value with its last digit or letter changed: the check digit no longer fits."""
    last = value[-1]
    if last.isdigit():
        return value[:-1] + str((int(last) + 1) % 10)
    return value[:-1] + ("B" if last != "B" else "C")


# (rule, text with {v}, a valid value). Valid values computed by hand from each check algorithm.
CASES = [
    ("de_steuer_id", "Steuer-ID: {v} hinterlegt", "86095742719"),
    ("de_steuer_id", "steuerliche Identifikationsnummer {v}", "65929970489"),
    ("fr_nir", "assuré {v} inconnu", "1 84 12 76 451 089 46"),
    ("fr_nir_labelled", "numéro de sécurité sociale: {v}", "184127645108946"),
    ("fr_nir", "NIR {v} (Corse)", "2 90 05 2A 004 123 52"),
    ("es_dni", "titular con DNI {v}", "12345678Z"),
    ("es_dni", "documento {v} rechazado", "48392017-V"),
    ("es_nie", "NIE {v} caducado", "X1234567L"),
    ("es_nie", "extranjero Y-7654321-G registrado", "Y-7654321-G"),
    ("it_codice_fiscale", "codice fiscale {v} non valido per la fattura", "RSSMRA85T10A562S"),
    ("nl_bsn", "BSN {v} niet gevonden", "111222333"),
    ("nl_bsn", "burgerservicenummer: {v}", "1234.56.782"),
    ("pl_pesel", "PESEL: {v}", "44051401359"),
    ("se_personnummer", "personnummer {v} saknas", "811218-9876"),
    ("se_personnummer", "personnummer: {v}", "19811218-9876"),
    ("fi_hetu", "henkilötunnus {v}", "131052-308T"),
    ("fi_hetu", "customer {v} verified", "010594Y9032"),
    ("dk_cpr", "CPR-nr. {v}", "070761-4285"),
    ("uk_nino", "NI number {v} on file", "AB 12 34 56 C"),
    ("uk_nino", "nino={v}", "JG103759A"),
    ("tr_tckn", "TC kimlik no {v}", "10000000146"),
]


@pytest.mark.parametrize(("rule", "template", "value"), CASES)
def test_valid_national_ids_are_found(engine: AnalysisEngine, rule: str, template: str, value: str) -> None:
    text = template.replace("{v}", value) if "{v}" in template else template
    found = ids(engine, text)
    assert (value, rule) in found or any(v == value for v, _ in found), (text, found)


CHECKSUMMED = [c for c in CASES if c[0] not in ("dk_cpr", "uk_nino")]


@pytest.mark.parametrize(("rule", "template", "value"), CHECKSUMMED)
def test_wrong_check_digits_are_kept(engine: AnalysisEngine, rule: str, template: str, value: str) -> None:
    bad = tamper(value)
    text = template.replace("{v}", bad) if "{v}" in template else template.replace(value, bad)
    assert ids(engine, text) == [], text


def test_date_and_prefix_checks_without_check_digits(engine: AnalysisEngine) -> None:
    assert ids(engine, "CPR-nr. 320161-4285") == []  # no 32nd of January
    assert ids(engine, "CPR-nr. 071361-4285") == []  # no 13th month
    assert ids(engine, "NI number QQ 12 34 56 C") == []  # QQ is the reserved placeholder prefix
    assert ids(engine, "NI number AB 12 34 56 E") == []  # suffixes are A-D


def test_all_digit_ids_need_their_label(engine: AnalysisEngine) -> None:
    """Valid German tax ids, BSNs, PESELs, personnummer and TCKNs are also plain ids, counts
    and timestamps in telemetry: without their label they are kept."""
    for text in (
        "order 86095742719 shipped",
        "batch 111222333 done",
        "took 44051401359 ns",
        "ts 8112189876 id 811218-9876",
        "span 10000000146",
        "retry after 1712345678",
        "build 20240312-1234 deployed",
    ):
        assert ids(engine, text) == [], text


def test_decoys_stay(engine: AnalysisEngine) -> None:
    for text in (
        "ERR_40213 on api-7.eu-west-1.internal after 1532ms",
        "INC12345678 reopened, version v2.14.3",
        "request 3f2a1c9e-7d4b-4e8a-9c1d-2b3e4f5a6b7c /api/v1/orders/{id}/status",
        "PAY-8812 AUTH_4021 tk-48291734",
    ):
        assert ids(engine, text) == [], text
