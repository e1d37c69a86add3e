"""Rules an audit found implemented but unpinned: taxonomy fingerprint rules, fault domains of
messaging and security errors, both windows of a multiwindow burn, the origin climbing to its
service's entry span, failed retries of deterministic errors, the per-trace byte cap, the
service catalog's checks and log records that carry nothing but a stack trace."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.attributes import set_value
from errorgate.component import ComponentContext
from errorgate.config import ConfigError
from errorgate.governance.catalog import CatalogError, load_catalog
from errorgate.pipeline.assembly.assembler import AssemblyConfig, TraceAssembler
from errorgate.processors.sampling.config import SampleConfig
from errorgate.telemetry import Telemetry
from tests.test_assembly import batch, request, span, spans_by_service
from tests.test_classify_support import (
    CLIENT,
    INTERNAL,
    SERVER,
    T0,
    S,
    log,
    log_batch,
    make_classify,
    new_id,
    run,
    run_logs,
    total,
    trace_batch,
)

PRODUCER, CONSUMER = Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER
FP = "errorgate.error.fingerprint"
KIND = "errorgate.error.kind"


def failing(service: str, route: str, error_type: str, message: str, stack: str = "", at: float = T0) -> S:
    return S(
        service,
        route,
        new_id(),
        new_id(),
        end=at,
        error=True,
        attrs={"http.route": route},
        exception=(error_type, message, stack),
    )


def python_stack(function: str, line: int = 10) -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "/usr/lib/python3.12/site-packages/flask/app.py", line {line + 900}, in dispatch\n'
        f'  File "/srv/app/shop/orders.py", line {line}, in {function}\n'
        "RuntimeError: failed"
    )


def fingerprints(proc: Any, spans: list[S]) -> list[str]:
    out = run(proc, trace_batch(spans))
    return [out[(s.trace, s.span)][FP] for s in spans]


# ---------------------------------------------------------------- taxonomy fingerprint rules

RULES_TAXONOMY = """
itil_categories:
  Availability/Service Unavailable: the dependency is down
  Software/Defect: a bug
default_category: bug
categories:
  dependency_unavailable: {itil: Availability/Service Unavailable, domain: dependency, match: {http_status: [503]}}
  bug: {itil: Software/Defect, domain: code, match: {http_status: [500]}}
"""
RULES = """
fingerprint_rules:
  - match: {route: "/legacy/*"}
    group: legacy-api
  - match: {error_type: "*.CacheError", template: "cache miss*"}
    group: cache
"""


def test_fingerprint_rule_groups_different_errors_it_matches(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES_TAXONOMY + RULES)
    (tmp_path / "plain.yaml").write_text(RULES_TAXONOMY)
    spans = [
        # Both under /legacy/: different types, messages and stacks.
        failing("orders", "/legacy/orders", "KeyError", "order 17 missing", python_stack("load_order")),
        failing("orders", "/legacy/users/{id}", "ValueError", "bad user name", python_stack("load_user", 99)),
        # Same error as the first, outside the rule's route: its own group.
        failing("orders", "/api/orders", "KeyError", "order 17 missing", python_stack("load_order")),
        # The rule's route in another service: rules group per service.
        failing("billing", "/legacy/orders", "KeyError", "order 17 missing", python_stack("load_order")),
        # Both matchers of the second rule match, with different types and messages...
        failing("orders", "GET /a", "redis.CacheError", "cache miss for key 42"),
        failing("orders", "GET /b", "memcache.CacheError", "cache miss on shard 7"),
        # ...but not when only the type matches (every matcher of a rule must).
        failing("orders", "GET /a", "redis.CacheError", "cache server gone away"),
    ]
    with_rules, _ = make_classify(tmp_path, taxonomy=str(tmp_path / "rules.yaml"))
    fps = fingerprints(with_rules, spans)
    assert fps[0] == fps[1]
    assert fps[2] != fps[0]
    assert fps[3] != fps[0]
    assert fps[4] == fps[5]
    assert fps[6] != fps[4]
    assert len(set(fps)) == 5
    # The grouping above is the rules' doing: without them the matched errors stay apart.
    plain, _ = make_classify(tmp_path, taxonomy=str(tmp_path / "plain.yaml"))
    without = fingerprints(plain, spans)
    assert without[0] != without[1] and without[4] != without[5]


def test_bundled_rule_groups_every_deadline_exceeded_type(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path)
    spans = [
        failing("checkout", "POST /orders", "grpc.DeadlineExceededError", "deadline exceeded after 2s"),
        failing("checkout", "GET /cart", "context.DeadlineExceeded", "context deadline exceeded"),
        failing("checkout", "POST /orders", "TimeoutError", "deadline exceeded after 2s"),
    ]
    fps = fingerprints(proc, spans)
    assert fps[0] == fps[1]
    assert fps[2] != fps[0]  # a timeout of another type is not matched by the rule


# ---------------------------------------------------------------- fault domain and component


@pytest.mark.parametrize(
    ("kind", "attrs", "error", "exception", "expected"),
    [
        (
            PRODUCER,
            {"messaging.system": "kafka", "messaging.destination.name": "orders"},
            True,
            ("KafkaTimeoutError", "failed to update metadata after 60.0 secs", ""),
            ("timeout", "messaging", "orders"),
        ),
        (
            CONSUMER,
            {"messaging.system": "rabbitmq"},
            True,
            ("pika.exceptions.ChannelClosed", "channel closed by broker", ""),
            ("bug", "messaging", "rabbitmq"),
        ),
        (
            CLIENT,
            {"http.response.status_code": 401, "server.address": "auth-api"},
            False,
            None,
            ("auth", "security", "auth-api"),
        ),
        (
            CLIENT,
            {"http.response.status_code": 403, "peer.service": "vault"},
            False,
            None,
            ("auth", "security", "vault"),
        ),
        (  # a 403 the service itself answered (status ERROR): its own component
            SERVER,
            {"http.response.status_code": 403},
            True,
            None,
            ("auth", "security", "shop"),
        ),
        (
            CLIENT,
            {"rpc.grpc.status_code": 16, "rpc.service": "acme.Ledger"},
            False,
            None,
            ("auth", "security", "acme.Ledger"),
        ),
        (
            CLIENT,
            {"rpc.status_code": "PERMISSION_DENIED", "rpc.service": "acme.Ledger"},
            False,
            None,
            ("auth", "security", "acme.Ledger"),
        ),
        (  # the error's nature names the domain before the database does
            CLIENT,
            {"db.system.name": "postgresql", "peer.service": "orders-db"},
            True,
            ("psycopg.errors.InsufficientPrivilege", "permission denied for table orders", ""),
            ("auth", "security", "orders-db"),
        ),
        (  # counter-cases: the same calls failing otherwise are not security
            CLIENT,
            {"http.response.status_code": 503, "server.address": "auth-api"},
            False,
            None,
            ("dependency_unavailable", "dependency", "auth-api"),
        ),
        (
            CLIENT,
            {"db.system.name": "postgresql", "peer.service": "orders-db"},
            True,
            ("psycopg.OperationalError", "connection refused", ""),
            ("connection_refused", "datastore", "orders-db"),
        ),
    ],
    ids=[
        "kafka-producer",
        "rabbitmq-consumer",
        "http-401-client",
        "http-403-client",
        "http-403-server",
        "grpc-unauthenticated",
        "grpc-permission-denied",
        "db-permission-denied",
        "http-503-client",
        "db-connection-refused",
    ],
)
def test_fault_domain_and_component(
    tmp_path: Path,
    kind: int,
    attrs: dict[str, Any],
    error: bool,
    exception: tuple[str, str, str] | None,
    expected: tuple[str, str, str],
) -> None:
    proc, tel = make_classify(tmp_path)
    t, s = new_id(), new_id()
    item = S(
        "shop", "op", t, s, parent=new_id(), kind=kind, end=T0, error=error, attrs=attrs, exception=exception
    )
    a = run(proc, trace_batch([item]))[(t, s)]
    got = (a["errorgate.error.category"], a["errorgate.error.domain"], a["errorgate.error.component"])
    assert got == expected
    assert total(tel, "errorgate_errors_total", domain=expected[1], component=expected[2]) == 1


# ---------------------------------------------------------------- multiwindow burn: both windows


def _hour_of_checkout(proc: Any, error_seconds: set[int]) -> dict[str, Any]:
    """One request per second for an hour (telemetry time) to checkout (tier 1, SLO 99.9 %),
    failing at ``error_seconds``; the last second always fails. Returns the last item's attributes."""
    error_seconds = error_seconds | {3599}
    last: dict[str, Any] = {}
    for minute in range(60):
        spans = [
            S(
                "checkout",
                "POST /orders",
                new_id(),
                new_id(),
                end=T0 + second,
                error=second in error_seconds,
                attrs={
                    "http.route": "/orders",
                    "http.response.status_code": 500 if second in error_seconds else 200,
                },
            )
            for second in range(minute * 60, minute * 60 + 60)
        ]
        out = run(proc, trace_batch(spans, complete_traces=True))
        if minute == 59:
            last = out[(spans[-1].trace, spans[-1].span)]
    return last


# Errors every 6 s in minutes 10-20: 100 of the hour's ~3400 counted requests (1 h burn ~29).
EARLIER = set(range(600, 1200, 6))
# Errors every 20 s in the last 5 minutes: 15 of 300 (5 min burn 50), but only ~4 over the hour.
RECENT = set(range(3320, 3600, 20))


@pytest.mark.parametrize(
    ("error_seconds", "severity", "urgency"),
    [
        (EARLIER, "P3", "2-medium"),  # the hour burns >= 14.4, the last 5 min do not: not paged
        (RECENT, "P3", "2-medium"),  # the last 5 min burn >= 14.4, the hour does not: not paged
        (EARLIER | RECENT, "P1", "1-high"),  # both windows burn >= 14.4 on a tier-1 service
    ],
    ids=["long-window-only", "short-window-only", "both-windows"],
)
def test_multiwindow_burn_needs_both_windows(
    tmp_path: Path, error_seconds: set[int], severity: str, urgency: str
) -> None:
    proc, _ = make_classify(tmp_path)
    last = _hour_of_checkout(proc, error_seconds)
    assert (last["errorgate.severity"], last["errorgate.itil.urgency"]) == (severity, urgency)


# ---------------------------------------------------------------- origin climbs to the entry span


def test_origin_is_the_failing_entry_span_of_the_service_where_it_started(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path)
    t = new_id()
    fe, fe_call, shop, work, parse = (new_id() for _ in range(5))
    spans = [
        S("frontend", "GET /", t, fe, end=T0 + 1, error=True, attrs={"http.response.status_code": 502}),
        S(
            "frontend",
            "GET",
            t,
            fe_call,
            parent=fe,
            kind=CLIENT,
            end=T0 + 0.9,
            error=True,
            attrs={"http.response.status_code": 500, "server.address": "shop"},
        ),
        S(
            "shop",
            "GET /items",
            t,
            shop,
            parent=fe_call,
            end=T0 + 0.8,
            error=True,
            attrs={"http.route": "/items", "http.response.status_code": 500},
        ),
        S("shop", "render", t, work, parent=shop, kind=INTERNAL, end=T0 + 0.7, error=True),
        # The deepest failing span: an INTERNAL one, every span above it in shop fails too.
        S(
            "shop",
            "parse",
            t,
            parse,
            parent=work,
            kind=INTERNAL,
            end=T0 + 0.6,
            error=True,
            exception=("ZeroDivisionError", "division by zero", ""),
        ),
    ]
    out = run(proc, trace_batch(spans, complete_traces=True))
    assert out[(t, shop)]["errorgate.error.origin"] is True  # the entry span represents its service
    for inner in (work, parse):
        assert "errorgate.error.origin" not in out[(t, inner)]
        assert "errorgate.error.origin_service" not in out[(t, inner)]  # same service as the origin
        assert out[(t, inner)][KIND] != "cascading"
    for upstream in (fe, fe_call):
        assert "errorgate.error.origin" not in out[(t, upstream)]
        assert out[(t, upstream)]["errorgate.error.origin_service"] == "shop"
        assert out[(t, upstream)][KIND] == "cascading"


# ---------------------------------------------------------------- retries that fail


def _call(trace: int, parent: int, at: float, status: int, **attrs: Any) -> S:
    return S(
        "checkout",
        "POST",
        trace,
        new_id(),
        parent=parent,
        kind=CLIENT,
        end=at,
        attrs={"http.response.status_code": status, "server.address": "payments", **attrs},
    )


def test_deterministic_error_whose_retry_failed_is_persistent_at_once(tmp_path: Path) -> None:
    # 422: validation, a deterministic class. A first occurrence alone is transient...
    alone, _ = make_classify(tmp_path / "alone")
    t, root = new_id(), new_id()
    single = _call(t, root, T0 + 1, 422)
    out = run(
        alone, trace_batch([S("checkout", "POST /orders", t, root, end=T0 + 2), single], complete_traces=True)
    )
    assert out[(t, single.span)][KIND] == "transient"

    # ...but when its retry in the same trace failed as well, every attempt is persistent.
    proc, tel = make_classify(tmp_path / "retried")
    t, root = new_id(), new_id()
    first, again = (
        _call(t, root, T0 + 1, 422),
        _call(t, root, T0 + 1.5, 422, **{"http.request.resend_count": 1}),
    )
    out = run(
        proc,
        trace_batch([S("checkout", "POST /orders", t, root, end=T0 + 2), first, again], complete_traces=True),
    )
    assert [out[(t, s.span)][KIND] for s in (first, again)] == ["persistent", "persistent"]
    assert total(tel, "errorgate_retried_operations_total", service="checkout", outcome="failed") == 1

    # A single attempt that says it was resent (and failed) counts as a failed retry too.
    resent, _ = make_classify(tmp_path / "resent")
    t, root = new_id(), new_id()
    once = _call(t, root, T0 + 1, 422, **{"retry.attempt": 2})
    out = run(
        resent, trace_batch([S("checkout", "POST /orders", t, root, end=T0 + 2), once], complete_traces=True)
    )
    assert out[(t, once.span)][KIND] == "persistent"


# ---------------------------------------------------------------- per-trace byte cap


def test_trace_over_the_byte_cap_is_released_early_whole_and_others_keep_waiting(tmp_path: Path) -> None:
    def feed(asm: TraceAssembler) -> list[Any]:
        outs = [asm.process(batch(request("big", *[span(1, i, name="x" * 300) for i in range(1, 4)]), T0))]
        outs.append(asm.process(batch(request("small", span(2, 100)), T0)))
        # More of trace 1 from another service pushes it over 2 KiB.
        outs.append(
            asm.process(batch(request("edge", *[span(1, i, name="y" * 300) for i in range(4, 7)]), T0 + 1))
        )
        return outs

    context = ComponentContext("sample", tmp_path, Telemetry(), logging.getLogger("t"))
    # The cap is sample's setting: the assembler in front of classify/sample takes it from there.
    config = SampleConfig.model_validate({"decision_wait": 10, "max_bytes_per_trace": 2048})
    asm = TraceAssembler.from_sample_config(config, context)
    first, small, over = feed(asm)
    assert first.batches == [] and small.batches == []  # under the cap: held
    assert len(over.batches) == 1
    assert over.batches[0].notes["early"] is True and over.batches[0].notes["complete_traces"] is True
    assert spans_by_service(over) == {"big": {1, 2, 3}, "edge": {4, 5, 6}}  # whole, nothing dropped
    assert asm.held_traces == 1  # the small trace still waits its full decision_wait
    assert asm.poll(T0 + 9.9).batches == []
    assert spans_by_service(asm.poll(T0 + 10)) == {"small": {100}}
    late = asm.process(batch(request("edge", span(1, 7)), T0 + 11))
    assert late.batches[0].notes["late"] is True  # the rest of the giant follows as late spans
    asm.shutdown()

    # Under the default cap (4 MiB) the same traffic is simply held.
    default = TraceAssembler(
        AssemblyConfig(decision_wait=10),
        ComponentContext("s", tmp_path / "d", Telemetry(), logging.getLogger("t")),
    )
    assert all(out.batches == [] for out in feed(default))
    assert default.held_traces == 2


# ---------------------------------------------------------------- service catalog checks

CATALOG = """
teams:
  payments:
    escalation:
      default: {primary: pay-primary}
      night: {primary: pay-night}
services:
  checkout: {owner: payments, tier: 1, slo: 0.999, escalation: night}
"""


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("escalation: night}", "escalation: night, colour: red}", "services.checkout.colour: unknown key"),
        ("services:", "servces:", "servces: unknown key"),
        (
            "{primary: pay-night}",
            "{primary: pay-night, pager: x}",
            "teams.payments.escalation.night.pager: unknown key",
        ),
        (
            "owner: payments",
            "owner: ghosts",
            "services.checkout.owner: team 'ghosts' is not defined under teams:",
        ),
        (
            "escalation: night}",
            "escalation: weekend}",
            "services.checkout.escalation: policy 'weekend' is not defined under teams.payments.escalation",
        ),
        ("tier: 1", "tier: 5", "services.checkout.tier: Input should be less than or equal to 4"),
    ],
)
def test_catalog_rejects_bad_entries_naming_file_service_and_key(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(CATALOG)
    assert load_catalog(path).lookup("checkout").escalation == "night"  # the base file is valid
    assert old in CATALOG
    path.write_text(CATALOG.replace(old, new))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value) == f"{path}: {problem}"


def test_classify_refuses_a_catalog_with_an_unknown_owner(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(CATALOG.replace("owner: payments", "owner: ghosts"))
    with pytest.raises(
        ConfigError, match=r"^processors\.classify\.catalog: .*services\.checkout\.owner: team 'ghosts'"
    ):
        make_classify(tmp_path, catalog=str(path))


# ---------------------------------------------------------------- logs with only a stack trace


def test_log_record_with_only_a_stacktrace_is_an_error_grouped_by_its_frames(tmp_path: Path) -> None:
    proc, tel = make_classify(tmp_path)

    def info(body: str, at: float, stack: str = "") -> LogRecord:
        record = log(body, at, severity=9)  # INFO: only the stack trace can say something failed
        if stack:
            set_value(record.attributes, "exception.stacktrace", stack)
        return record

    records = [
        info("payment 1001 failed", T0, python_stack("charge", 10)),
        info("refund for bob failed", T0 + 1, python_stack("charge", 42)),
        info("payment 1001 failed", T0 + 2, python_stack("refund", 10)),
        info("payment 1002 done", T0 + 3),
    ]
    out = run_logs(proc, log_batch("payments", records))
    assert all(FP in a for a in out[:3])
    assert FP not in out[3]  # a plain INFO record is not an error
    # Same in-app frame (line numbers aside), different messages: one group; another frame: another.
    assert out[0][FP] == out[1][FP] != out[2][FP]
    assert total(tel, "errorgate_errors_total", service="payments") == 3


# ---------------------------------------------------------------- errorgate demo


def _demo_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("== ") and line.endswith(" =="):
            current = sections.setdefault(line.strip("= "), [])
        elif line.strip():
            current.append(line)
    return sections


def test_demo_prints_error_groups_with_kind_severity_origin_and_what_sampling_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "errorgate", "demo", "--duration", "2", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    sections = _demo_sections(done.stdout)
    header, *rows = sections["error groups (exported items, by fingerprint)"]
    assert header.split() == ["fingerprint", "service", "items", "kinds", "sev", "origin", "template"]
    groups = []
    for row in rows:  # fixed-width columns, as printed
        groups.append(
            {
                "service": row[18:35].strip(),
                "kinds": dict(k.split(":") for k in row[43:71].strip().split(",")),
                "severity": row[71:76].strip(),
                "origin": row[76:96].strip(),
                "template": row[96:],
            }
        )
    # The scenarios of demo_traffic: a deterministic validation failure in checkout (tier 1)...
    rejected = [
        g for g in groups if g["service"] == "checkout" and g["template"] == "card number rejected by issuer"
    ]
    assert len(rejected) == 1
    assert "persistent" in rejected[0]["kinds"] and rejected[0]["severity"] == "P1"
    assert rejected[0]["origin"] == "checkout"
    # ...and the orders database timing out, cascading through payments up to the frontend.
    cascaded = {
        g["service"]
        for g in groups
        if set(g["kinds"]) == {"cascading"} and g["origin"] == "orders-db.internal"
    }
    assert {"payments", "checkout", "frontend"} <= cascaded
    assert all(g["severity"] in {"P1", "P2", "P3", "P4"} for g in groups)
    # What sampling kept and dropped, by reason, and what the kept items stand for.
    sampling = {line[:16].strip(): line[16:] for line in sections["sampling"]}

    def by_reason(line: str) -> dict[str, int]:
        return {reason: int(n) for reason, n in (part.rsplit(" ", 1) for part in line.split(", "))}

    assert by_reason(sampling["traces kept"])["error"] > 0
    assert by_reason(sampling["traces dropped"])["probability"] > 0
    assert any(line.startswith("exported items stand for ") for line in sections["sampling"])
