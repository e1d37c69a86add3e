"""Fingerprints (with real SDK stack traces), templates, detection rules, the taxonomy check,
episode state machine (Nagios flapping) and severity boundaries at the workbook factors."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from errorgate.config import ConfigError
from errorgate.processors.classification.detect import detect_span
from errorgate.processors.classification.episodes import EpisodeParams, EpisodeTracker
from errorgate.processors.classification.severity import BurnRates
from errorgate.processors.classification.taxonomy import TaxonomyError, load_taxonomy, parse_taxonomy
from errorgate.processors.classification.template import parameterize
from errorgate.signals import Batch, iter_spans
from tests.test_classify_support import CLIENT, SERVER, T0, S, make_classify, new_id, run, trace_batch

# ---------------------------------------------------------------- fingerprints from a real SDK


def _load_order(order_id: str) -> None:
    raise KeyError(f"order {order_id} missing from cache shard 0x{abs(hash(order_id)) % 4096:x}")


def _load_customer(customer_id: str) -> None:
    raise KeyError(f"order {customer_id} missing from cache shard 0x1f")


def _sdk_error_spans(calls: list[tuple[object, str]]) -> Batch:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for fn, arg in calls:
        try:
            with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER):
                fn(arg)  # type: ignore[operator]
        except KeyError:
            pass
    provider.shutdown()
    return Batch.of(encode_spans(exporter.get_finished_spans()))


def test_fingerprint_same_error_different_ids_same_group_different_stack_different_group(
    tmp_path: Path,
) -> None:
    proc, _ = make_classify(tmp_path)
    batch = _sdk_error_spans([(_load_order, "A-1001"), (_load_order, "B-2002"), (_load_customer, "C-3003")])
    proc.process(batch)
    attrs = [{kv.key: kv.value for kv in span.attributes} for _, _, span in iter_spans(batch.request)]  # type: ignore[arg-type]
    fps = [a["errorgate.error.fingerprint"].string_value for a in attrs]
    assert fps[0] == fps[1]  # same stack, different ids in the message
    assert fps[2] != fps[0]  # different in-app frame (_load_customer), same type and message shape
    assert attrs[0]["errorgate.error.category"].string_value == "bug"  # KeyError: a deterministic code defect
    assert "A-1001" not in attrs[0]["errorgate.error.template"].string_value


def test_fingerprint_ignores_line_numbers_and_vendor_frames(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path)

    def stack(line: int, vendor_line: int) -> str:
        return (
            "Traceback (most recent call last):\n"
            f'  File "/usr/lib/python3.11/site-packages/flask/app.py", line {vendor_line}, in dispatch\n'
            f'  File "/srv/app/shop/orders.py", line {line}, in place_order\n'
            "ZeroDivisionError: division by zero"
        )

    spans = [
        S(
            "orders",
            "POST /orders",
            new_id(),
            new_id(),
            end=T0,
            error=True,
            exception=("ZeroDivisionError", "division by zero", stack(10, 99)),
        ),
        S(
            "orders",
            "POST /orders",
            new_id(),
            new_id(),
            end=T0,
            error=True,
            exception=("ZeroDivisionError", "division by zero", stack(42, 7)),
        ),
        S(
            "orders",
            "POST /orders",
            new_id(),
            new_id(),
            end=T0,
            error=True,
            exception=(
                "ZeroDivisionError",
                "division by zero",
                stack(42, 7).replace("place_order", "refund"),
            ),
        ),
    ]
    out = list(run(proc, trace_batch(spans)).values())
    fps = [a["errorgate.error.fingerprint"] for a in out]
    assert fps[0] == fps[1] != fps[2]


# ---------------------------------------------------------------- templates never carry PII


@pytest.mark.parametrize(
    ("message", "template"),
    [
        ("user alice@example.com not found (id=42)", "user <email> not found (id=<val>)"),
        ("GET https://api.example.com/v1/users/123?token=abc returned 503", "GET <url> returned <num>"),
        (
            "order 3f2a9c1e-1111-2222-3333-444455556666 failed at 2024-05-01T10:00:00Z",
            "order <uuid> failed at <timestamp>",
        ),
        ("connect to 192.168.1.20:5432 and fe80::1:2 refused", "connect to <ip> and <ip> refused"),
        ("invalid card '4111 1111 1111 1111' for \"Jane Doe\"", "invalid card <str> for <str>"),
        (
            "hash deadbeefcafe1234 mismatch, ptr 0x7fff, customer C12345",
            "hash <hex> mismatch, ptr <hex>, customer <id>",
        ),
        ("request took 1500ms (limit 1.5s)", "request took <duration> (limit <duration>)"),
        ("phone +1 415 555 0100 rejected", "phone <num> rejected"),
    ],
)
def test_template_replaces_variable_parts(message: str, template: str) -> None:
    assert parameterize(message) == template


# ---------------------------------------------------------------- detection per semantic conventions


@pytest.mark.parametrize(
    ("kind", "attrs", "failing"),
    [
        (SERVER, {"http.response.status_code": 503}, True),
        (SERVER, {"http.response.status_code": 404}, False),  # 4xx is the client's problem on a server
        (CLIENT, {"http.response.status_code": 404}, True),
        (SERVER, {"rpc.grpc.status_code": 3}, False),  # INVALID_ARGUMENT: not in the server-side subset
        (SERVER, {"rpc.grpc.status_code": 14}, True),  # UNAVAILABLE
        (CLIENT, {"rpc.grpc.status_code": 3}, True),
        (SERVER, {"rpc.status_code": "DEADLINE_EXCEEDED"}, True),
        (SERVER, {"error.type": "java.net.SocketTimeoutException"}, True),
        (SERVER, {"http.response.status_code": 200}, False),
    ],
)
def test_detection_follows_semantic_conventions(kind: int, attrs: dict, failing: bool) -> None:
    span = S("svc", "op", 1, 1, kind=kind, attrs=attrs).proto()
    assert (detect_span(span) is not None) is failing


def test_status_ok_is_final() -> None:
    span = S("svc", "op", 1, 1, attrs={"http.response.status_code": 500}).proto()
    span.status.code = span.status.STATUS_CODE_OK
    assert detect_span(span) is None


# ---------------------------------------------------------------- taxonomy check

GOOD = """
itil_categories:
  Network/Latency: slow network
  Software/Defect: a bug
default_category: bug
categories:
  timeout: {itil: Network/Latency, domain: network, match: {http_status: [504]}}
  bug: {itil: Software/Defect, domain: code, match: {http_status: [500]}}
"""


def test_bundled_taxonomy_passes_the_check() -> None:
    taxonomy = load_taxonomy()
    itil = [c.itil for c in taxonomy.categories.values()]
    assert len(itil) == len(set(itil)) == len(taxonomy.spec.itil_categories)
    assert {
        "timeout",
        "connection_refused",
        "rate_limited",
        "validation",
        "auth",
        "not_found",
        "dependency_unavailable",
        "resource_exhausted",
        "data_corruption",
        "bug",
        "config",
    } <= set(taxonomy.categories)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            GOOD.replace("itil: Software/Defect", "itil: Network/Latency"),
            "categories.bug.itil: 'Network/Latency' is already the meaning of leaf 'timeout'",
        ),
        (
            GOOD.replace("itil: Software/Defect", "itil: [Software/Defect, Network/Latency]"),
            "categories.bug.itil",
        ),
        (GOOD.replace("itil: Software/Defect", "itil: Software/Crash"), "'Software/Crash' is not declared"),
        (
            GOOD.replace("Software/Defect: a bug", "Software/Defect: a bug\n  Data/Loss: lost data"),
            "itil_categories.Data/Loss: no leaf maps to it",
        ),
        (GOOD.replace("a bug", "slow network"), "same meaning as 'Network/Latency'"),
        (GOOD.replace("[500]", "[504]"), "504 is also claimed by 'timeout'"),
        (GOOD + "  timeout: {itil: Software/Defect, domain: code}\n", "key 'timeout' appears twice"),
        (GOOD.replace("domain: code", "domain: kernel"), "categories.bug.domain"),
        (GOOD.replace("domain: code,", "domain: code, colour: red,"), "categories.bug.colour: unknown key"),
    ],
)
def test_taxonomy_check_rejects_ambiguous_mappings(text: str, problem: str) -> None:
    parse_taxonomy(GOOD)
    with pytest.raises(TaxonomyError) as info:
        parse_taxonomy(text, "tax.yaml")
    assert problem in str(info.value)


def test_bad_taxonomy_path_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(GOOD.replace("[500]", "[504]"))
    with pytest.raises(ConfigError, match=r"^processors\.classify\.taxonomy: .*504"):
        make_classify(tmp_path, taxonomy=str(tmp_path / "t.yaml"))


# ---------------------------------------------------------------- episodes


def test_nagios_flapping_with_hysteresis() -> None:
    # Reopen/recurrence rules off: only the weighted state-change share decides.
    tracker = EpisodeTracker(EpisodeParams(reopen_count=10**6, quiet_buckets=-1))
    kinds = {m: tracker.observe("s", "f", T0 + m * 60, deterministic=False).kind for m in range(0, 24, 2)}
    shares = [tracker.observe("s", "g", T0 + m * 60, deterministic=False).flap_share for m in range(0, 24, 2)]
    assert kinds[0] == "transient"
    assert kinds[22] == "intermittent"
    first_flapping = min(m for m, k in kinds.items() if k == "intermittent")
    assert shares[first_flapping // 2] >= 0.5 > shares[first_flapping // 2 - 1]
    # Steady failure afterwards: still flapping while the share stays >= 25 %, then persistent.
    steady = [tracker.observe("s", "f", T0 + m * 60, deterministic=False) for m in range(23, 60)]
    switch = next(i for i, o in enumerate(steady) if o.kind != "intermittent")
    assert 0.25 <= steady[switch - 1].flap_share < 0.5 and steady[switch].flap_share < 0.25
    assert steady[switch].kind == "persistent"


def test_reopening_twice_in_a_day_is_intermittent_and_states_are_bounded() -> None:
    tracker = EpisodeTracker(EpisodeParams(max_states=50))
    kinds = [tracker.observe("s", "f", T0 + h * 3600, deterministic=False).kind for h in range(4)]
    assert kinds == ["transient", "transient", "intermittent", "intermittent"]
    assert tracker.observe("s", "f", T0 + 3 * 86400, deterministic=False).kind == "transient"
    for i in range(500):
        tracker.observe("s", f"fp{i}", T0, deterministic=False)
    assert len(tracker) == 50


# ---------------------------------------------------------------- severity at the workbook factors


@pytest.mark.parametrize(
    ("errors", "tier", "severity"),
    [
        (144, 1, "P1"),  # burn exactly 14.4 over 5 min and 1 h
        (143, 1, "P2"),  # 14.3: below the fast-burn page, above 6
        (144, 2, "P2"),  # fast burn on a tier-2 service
        (60, 2, "P2"),  # exactly 6 over 30 min and 6 h
        (59, 2, "P3"),
        (60, 3, "P3"),  # 6x on tier 3 is a ticket
        (10, 1, "P3"),  # exactly 1 over 6 h and 3 d
        (9, 1, "P4"),
    ],
)
def test_severity_boundaries(errors: int, tier: int, severity: str) -> None:
    burn = BurnRates()
    for i in range(10_000):  # SLO 99.9 %: budget 0.1 %, all within the shortest window
        burn.record("svc", T0 + i * 0.01, 1, 1 if i < errors else 0)
    assert burn.assess("svc", tier, 0.999).severity == severity


def test_too_few_requests_do_not_burn() -> None:
    burn = BurnRates(min_requests=10)
    for i in range(9):
        burn.record("svc", T0 + i, 1, 1)
    assert burn.assess("svc", 1, 0.999).severity == "P4"
