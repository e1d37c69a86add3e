"""errorgate's redaction engine on the labelled corpus and on every pitfall measured in issue 4.

Real Presidio and the real spaCy model (loaded once per module)."""

from __future__ import annotations

import pytest

from errorgate.processors.redact import RedactConfig
from errorgate.processors.redaction.engine import AnalysisEngine, ResultCache, may_hold_name
from errorgate.processors.redaction.specs import CustomPattern, CustomRecognizerSpec
from tests.redaction_corpus import build_corpus, evaluate, luhn_complete, nhs_valid_number


@pytest.fixture(scope="module")
def engine() -> AnalysisEngine:
    config = RedactConfig(workers=0)
    return AnalysisEngine(config.engine_settings(config.effective_policy()))


def found(engine: AnalysisEngine, text: str, free_text: bool = False) -> list[tuple[str, str]]:
    return [(f.entity_type, text[f.start : f.end]) for f in engine.analyze_one(text, free_text)]


# ----------------------------------------------------------------- corpus


def test_corpus_recall_precision_and_decoy_survival(engine: AnalysisEngine) -> None:
    corpus = build_corpus(420)
    results = engine.analyze_many([(s.text, s.free_text) for s in corpus])
    by_id = {id(s): r for s, r in zip(corpus, results, strict=True)}
    assert all(r is not None for r in results)
    score = evaluate(corpus, lambda s: [(f.start, f.end) for f in by_id[id(s)] or ()])
    # Every planted type is in the corpus and caught; names come from NER, so a little slack.
    assert len(score.planted) >= 18
    for entity in score.planted:
        assert score.recall(entity) >= (0.85 if entity == "PERSON" else 0.97), (entity, score.as_dict())
    assert score.precision() >= 0.95, score.as_dict()
    assert score.decoy_survival() >= 0.99, score.as_dict()
    assert score.clean_lines_flagged <= score.clean_lines * 0.02, score.as_dict()


# ----------------------------------------------------------------- pitfalls of default Presidio


@pytest.mark.parametrize(
    "text",
    [
        "o.id=42 service.name=checkout",
        "lookup o.id failed in service.name resolver",
        "db.statement k8s.pod.name http.target",
    ],
)
def test_dotted_attribute_names_are_not_urls(engine: AnalysisEngine, text: str) -> None:
    assert found(engine, text, free_text=True) == []


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T12:34:56.789Z request finished",
        "ts=1717171717123 took 350ms at 12:30:00",
        "span 00f067aa0ba902b7 of trace 4bf92f3577b34da6a3ce929d0e0e4736 ended",
        "request id 6f1c2a3e-8b4d-4c8e-9f2a-1b2c3d4e5f60 retried 3 times",
        "Retrying in 30s after 5 attempts (deadline 2024-05-01 12:00:00)",
    ],
)
def test_timestamps_and_ids_are_not_dates_or_pii(engine: AnalysisEngine, text: str) -> None:
    assert found(engine, text, free_text=True) == []


def test_ten_digit_ids_passing_the_nhs_checksum_survive(engine: AnalysisEngine) -> None:
    import random

    rng = random.Random(3)
    for _ in range(50):
        number = nhs_valid_number(rng)
        assert found(engine, f"order_id={number} shipped", free_text=True) == [], number
        assert found(engine, number) == [], number


@pytest.mark.parametrize(
    "text", ["version 1.2.3.4", "v10.0.19041.1", "agent/2.31.0.4 deployed", "build 4.29.90.228"]
)
def test_version_strings_are_not_ip_addresses(engine: AnalysisEngine, text: str) -> None:
    assert found(engine, text, free_text=True) == []


def test_real_ips_are_found_next_to_versions(engine: AnalysisEngine) -> None:
    assert found(engine, "v1.2.3.4 got a request from 203.0.113.77") == [("IP_ADDRESS", "203.0.113.77")]
    assert found(engine, "peer 2001:db8::8a2e:370:7334 reset") == [("IP_ADDRESS", "2001:db8::8a2e:370:7334")]
    # Loopback and unspecified identify nobody.
    assert found(engine, "listening on 127.0.0.1 and 0.0.0.0 and ::1") == []


@pytest.mark.parametrize(
    "number",
    ["123456789", "1234567890", "12345678901", "987654321012", "50000000000000", "9876543210987654321"],
)
def test_weak_recognizers_do_not_fire_on_long_numbers(engine: AnalysisEngine, number: str) -> None:
    # Presidio's US bank/licence/passport recognizers report these below 0.5; ours are not installed
    # and the threshold is 0.5, so a bare number is not PII unless it is a valid card.
    assert found(engine, number) == []
    assert found(engine, f"processed {number} rows", free_text=True) == []


# ----------------------------------------------------------------- secrets coverage

SECRETS = [
    (
        "JWT",
        "Authorization: Bearer {v}",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("AUTH_CREDENTIAL", "Authorization: Bearer {v}", "9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZyyXX"),
    ("AUTH_CREDENTIAL", "Authorization: Basic {v}", "YWxhZGRpbjpvcGVuc2VzYW1l"),
    ("AWS_ACCESS_KEY", "aws_access_key_id={v}", "AKIAIOSFODNN7EXAMPLE"),
    ("PASSWORD", "aws_secret_access_key={v}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("GITHUB_TOKEN", "clone with {v}", "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
    ("GITHUB_TOKEN", "pat {v}", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
    ("SLACK_TOKEN", "slack {v}", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("STRIPE_KEY", "stripe {v}", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("GOOGLE_API_KEY", "key={v}", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
    ("PASSWORD", "POST /login user=bob&password={v}&x=1", "hunter2hunter2"),
    ("PASSWORD", '{{"db_password": "{v}"}}', "S3cr3t!pass"),
    ("SESSION_COOKIE", "Cookie: theme=dark; sessionid={v}", "8f14e45fceea167a5a36dedd4bea2543"),
    ("SESSION_COOKIE", "Set-Cookie: JSESSIONID={v}; Path=/", "A1B2C3D4E5F6A7B8C9D0"),
    ("URL_CREDENTIALS", "dsn postgres://{v}@db.internal:5432/orders", "app_user:Pa55w0rd"),
    ("URL_CREDENTIALS", "fetch https://{v}@git.example.com/repo.git", "deploy:tok3n"),
]


@pytest.mark.parametrize(("entity", "template", "value"), SECRETS)
def test_secrets_are_found_and_only_the_secret_is_covered(
    engine: AnalysisEngine, entity: str, template: str, value: str
) -> None:
    text = template.format(v=value)
    results = found(engine, text)
    assert (entity, value) in results, results


def test_private_keys_are_covered_whole(engine: AnalysisEngine) -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
    assert found(engine, f"loaded {pem} ok", free_text=True) == [("PRIVATE_KEY", pem)]
    truncated = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yBySuOm"
    assert found(engine, truncated) == [("PRIVATE_KEY", truncated)]


def test_high_entropy_check_spares_hex_ids_uuids_and_paths(engine: AnalysisEngine) -> None:
    assert found(engine, "upstream sent Zx9Qm2Lp7Rt4Vw8Ky3Nb6Hc1Jd5Fg0Sa2Ee back") == [
        ("HIGH_ENTROPY_SECRET", "Zx9Qm2Lp7Rt4Vw8Ky3Nb6Hc1Jd5Fg0Sa2Ee")
    ]
    for decoy in [
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "6f1c2a3e-8b4d-4c8e-9f2a-1b2c3d4e5f60",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "/api/v1/Organizations/Members/Permissions/Roles",
        "OrderServiceImplementationFactoryBean",
    ]:
        assert found(engine, decoy) == [], decoy


# ----------------------------------------------------------------- encodings and cards


def test_url_encoded_emails_and_phones(engine: AnalysisEngine) -> None:
    text = "GET /search?email=jane.doe%40example.com&to=%2B44%2020%207946%200958&x=1"
    assert found(engine, text) == [
        ("EMAIL_ADDRESS", "jane.doe%40example.com"),
        ("PHONE_NUMBER", "%2B44%2020%207946%200958"),
    ]
    assert found(engine, "r=jane%2540example.org") == [("EMAIL_ADDRESS", "jane%2540example.org")]


def test_plain_emails_including_in_paths(engine: AnalysisEngine) -> None:
    assert found(engine, "GET /users/jane@example.com/orders") == [("EMAIL_ADDRESS", "jane@example.com")]
    # No public suffix: an internal name, not an address.
    assert found(engine, "git@github-runner:repo") == []


def test_mastercard_two_series_and_other_brands(engine: AnalysisEngine) -> None:
    import random

    rng = random.Random(5)
    for prefix, length in [
        ("2221", 16),
        ("2720", 16),
        ("2500", 16),
        ("51", 16),
        ("4", 16),
        ("37", 15),
        ("6011", 16),
    ]:
        number = luhn_complete(prefix, length, rng)
        assert found(engine, f"card {number} declined") == [("CREDIT_CARD", number)], number
    assert found(engine, "pan 5555-5555-5555-4444") == [("CREDIT_CARD", "5555-5555-5555-4444")]
    # Right length and BIN but a failing Luhn digit: an id, kept.
    assert found(engine, "card 4111111111111112") == []


def test_phone_numbers_need_formatting_or_a_phone_word(engine: AnalysisEngine) -> None:
    assert found(engine, "call +1 202-555-0143 now") == [("PHONE_NUMBER", "+1 202-555-0143")]
    assert found(engine, "tel 2025550143") == [("PHONE_NUMBER", "2025550143")]
    assert found(engine, "order 2025550143 shipped") == []


def test_phone_regions_are_bounded_by_config() -> None:
    config = RedactConfig(workers=0, phone_regions=["US"], ner=False)
    us_only = AnalysisEngine(config.engine_settings(config.effective_policy()))
    assert found(us_only, "call (202) 555-0143") == [("PHONE_NUMBER", "(202) 555-0143")]
    # A French national-format number is only valid when FR is among the regions.
    assert found(us_only, "appeler 01 42 68 53 00") == []
    config = RedactConfig(workers=0, phone_regions=["FR"], ner=False)
    fr = AnalysisEngine(config.engine_settings(config.effective_policy()))
    assert found(fr, "appeler 01 42 68 53 00") == [("PHONE_NUMBER", "01 42 68 53 00")]


def test_ner_only_on_free_text_and_gated(engine: AnalysisEngine) -> None:
    text = "Refund approved for Maria Garcia in Berlin"
    assert ("PERSON", "Maria Garcia") in found(engine, text, free_text=True)
    assert found(engine, text, free_text=False) == []
    assert not may_hold_name("payment failed code=E1042 after 3 retries")
    assert not may_hold_name("Authorization: Bearer abc")
    assert may_hold_name("Refund approved for Maria Garcia")


# ----------------------------------------------------------------- YAML recognizers, cache


def test_custom_yaml_recognizers_regex_with_context_and_deny_list() -> None:
    specs = [
        CustomRecognizerSpec(
            name="employee_id",
            entity_type="EMPLOYEE_ID",
            patterns=[CustomPattern(name="emp", regex=r"\bE\d{6}\b", score=0.4)],
            context=["employee"],
        ),
        CustomRecognizerSpec(name="codenames", entity_type="PROJECT", deny_list=["Bluebird", "Nightjar"]),
    ]
    config = RedactConfig(workers=0, ner=False, custom_recognizers=specs)
    custom = AnalysisEngine(config.engine_settings(config.effective_policy()))
    # Below the threshold without context, above it with.
    assert found(custom, "ticket E123456 closed") == []
    assert found(custom, "employee E123456 badge expired") == [("EMPLOYEE_ID", "E123456")]
    assert found(custom, "project Nightjar launch") == [("PROJECT", "Nightjar")]


def test_result_cache_is_bounded_lru() -> None:
    cache = ResultCache(max_entries=2, max_value_len=10)
    cache.put(("a", False), ())
    cache.put(("b", False), ())
    assert cache.get(("a", False)) == ()
    cache.put(("c", False), ())  # evicts b, the least recently used
    assert cache.get(("b", False)) is None
    assert cache.get(("a", False)) == ()
    cache.put(("x" * 11, False), ())  # too long to cache
    assert cache.get(("x" * 11, False)) is None
    assert len(cache) == 2
