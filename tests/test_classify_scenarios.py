"""Labelled scenario replays through the registered ``classify`` processor, with explicit
telemetry timestamps: transient blip, persistent validation failure, flapping dependency,
and a database failure cascading through three services into a cross-trace incident."""

from __future__ import annotations

from pathlib import Path

from tests.test_classify_support import (
    CLIENT,
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


def healthy(service: str, at: float, name: str = "GET /health") -> S:
    return S(service, name, trace=new_id(), span=new_id(), end=at)


def test_transient_blip(tmp_path: Path) -> None:
    proc, tel = make_classify(tmp_path)
    kinds, attrs = [], []
    for minute in range(10):
        spans = [healthy("catalog", T0 + minute * 60 + i) for i in range(20)]
        if minute == 4:  # one-minute blip: three timeouts calling the inventory API
            for i in range(3):
                t, s = new_id(), new_id()
                spans.append(
                    S(
                        "catalog",
                        "GET /items/{id}",
                        t,
                        s,
                        end=T0 + 240 + 30 + i,
                        error=True,
                        attrs={"http.route": "/items/{id}", "http.response.status_code": 504},
                        exception=("TimeoutError", f"timed out after {30 + i}s waiting for 10.0.0.{i}", ""),
                    )
                )
        out = run(proc, trace_batch(spans, complete_traces=True))
        for a in out.values():
            if "errorgate.error.kind" in a:
                kinds.append(a["errorgate.error.kind"])
                attrs.append(a)
    assert kinds == ["transient"] * 3
    assert {a["errorgate.error.fingerprint"] for a in attrs} == {attrs[0]["errorgate.error.fingerprint"]}
    a = attrs[0]
    assert a["errorgate.error.category"] == "timeout"
    assert a["errorgate.itil.category"] == "Performance/Timeout"
    assert a["errorgate.error.template"] == "timed out after <duration> waiting for <ip>"
    assert a["errorgate.error.origin"] is True and "errorgate.error.origin_service" not in a
    # catalog: tier 3, SLO 99 %: 3 failed of 200 requests burn 1.5x -> only the slow (P3) rule fires
    assert {x["errorgate.severity"] for x in attrs} == {"P3"}
    assert total(tel, "errorgate_requests_total", service="catalog") == 203
    assert total(tel, "errorgate_errors_total", service="catalog", kind="transient", category="timeout") == 3
    assert total(tel, "errorgate_error_episodes_total", service="catalog") == 1
    # The same blip two hours later did not recur within 30 min: still transient.
    t, s = new_id(), new_id()
    later = S(
        "catalog",
        "GET /items/{id}",
        t,
        s,
        end=T0 + 7200,
        error=True,
        attrs={"http.route": "/items/{id}"},
        exception=("TimeoutError", "timed out after 31s waiting for 10.9.9.9", ""),
    )
    assert run(proc, trace_batch([later]))[(t, s)]["errorgate.error.kind"] == "transient"
    healthy_out = run(proc, trace_batch([healthy("catalog", T0 + 7201)]))
    assert not any(k.startswith("errorgate.") for a in healthy_out.values() for k in a)


def test_persistent_validation_failure(tmp_path: Path) -> None:
    proc, tel = make_classify(tmp_path)
    seen: list[dict] = []
    for minute in range(8):
        spans = [healthy("checkout", T0 + minute * 60 + i * 0.5, "POST /orders") for i in range(98)]
        for i in range(2):
            t, s = new_id(), new_id()
            spans.append(
                S(
                    "checkout",
                    "POST /orders",
                    t,
                    s,
                    end=T0 + minute * 60 + 40 + i,
                    error=True,
                    attrs={"http.route": "/orders", "http.response.status_code": 400},
                    exception=(
                        "pydantic.ValidationError",
                        f"field 'email' must be a valid address: got bob{minute}@example.com (order {1000 + i})",
                        "",
                    ),
                )
            )
        out = run(proc, trace_batch(spans, complete_traces=True))
        seen.extend(a for a in out.values() if "errorgate.error.kind" in a)
    kinds = [a["errorgate.error.kind"] for a in seen]
    # Best belief at the time: the first items leave as transient until the evidence exists.
    assert kinds[:2] == ["transient", "transient"]
    assert set(kinds[2:]) == {"persistent"}
    assert len({a["errorgate.error.fingerprint"] for a in seen}) == 1
    a = seen[-1]
    assert a["errorgate.error.category"] == "validation"
    assert a["errorgate.error.domain"] == "data"
    assert a["errorgate.itil.category"] == "Application/Invalid Input"
    assert a["errorgate.error.template"] == "field <str> must be a valid address: got <email> (order <num>)"
    assert "bob" not in str([x["errorgate.error.template"] for x in seen])
    # checkout: tier 1, SLO 99.9 %: 2 % errors burn 20x over 5 min and 1 h -> P1, impact x urgency critical
    assert a["errorgate.severity"] == "P1"
    assert (a["errorgate.itil.impact"], a["errorgate.itil.urgency"], a["errorgate.itil.priority"]) == (
        "1-high",
        "1-high",
        "1-critical",
    )
    assert total(tel, "errorgate_errors_total", service="checkout", kind="persistent") == 14
    assert total(tel, "errorgate_errors_by_version_total", service="checkout", version="1.0.0") == 16


def test_intermittent_flapping_dependency(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path)
    results = []
    for minute in range(0, 20, 2):  # recommendations fails every other minute
        root, t = new_id(), new_id()
        client = new_id()
        spans = [
            S("frontend", "GET /", t, root, end=T0 + minute * 60 + 1, attrs={"http.route": "/"}),
            S(
                "frontend",
                "GET",
                t,
                client,
                parent=root,
                kind=CLIENT,
                end=T0 + minute * 60 + 0.9,
                attrs={
                    "http.response.status_code": 503,
                    "server.address": "recommendations",
                    "url.full": f"http://recommendations/api/v1/recs?user={minute}",
                },
            ),
        ]
        out = run(proc, trace_batch(spans, complete_traces=True))
        assert "errorgate.error.kind" not in out[(t, root)]  # the page degraded gracefully
        results.append(out[(t, client)])
    kinds = [r["errorgate.error.kind"] for r in results]
    assert kinds[0] == "transient"
    assert set(kinds[1:]) == {"intermittent"}
    r = results[-1]
    assert (r["errorgate.error.category"], r["errorgate.error.domain"]) == (
        "dependency_unavailable",
        "dependency",
    )
    assert r["errorgate.error.component"] == "recommendations"
    # A client span with no server child: the uninstrumented callee is the origin.
    assert r["errorgate.error.origin"] is True
    assert r["errorgate.error.origin_service"] == "recommendations"
    assert len({x["errorgate.error.fingerprint"] for x in results}) == 1


def _cascade_trace(at: float, failing: bool) -> tuple[list[S], dict[str, tuple[int, int]]]:
    """frontend -> checkout -> payments -> orders-db-proxy -> postgres (orders-db)."""
    t = new_id()
    chain = [
        ("frontend", "GET /checkout"),
        ("checkout", "POST /orders"),
        ("payments", "POST /charge"),
        ("orders-db-proxy", "GET /orders/{id}"),
    ]
    spans: list[S] = []
    ids: dict[str, tuple[int, int]] = {}
    parent = 0
    for depth, (service, route) in enumerate(chain):
        server = new_id()
        spans.append(
            S(
                service,
                route,
                t,
                server,
                parent=parent,
                kind=SERVER,
                end=at + 1 - depth * 0.1,
                error=failing,
                attrs={"http.route": route, "http.response.status_code": 500 if failing else 200},
            )
        )
        ids[service] = (t, server)
        parent = server
        if depth < len(chain) - 1:
            client = new_id()
            spans.append(
                S(
                    service,
                    "POST",
                    t,
                    client,
                    parent=server,
                    kind=CLIENT,
                    end=at + 0.95 - depth * 0.1,
                    error=failing,
                    attrs={
                        "http.response.status_code": 500 if failing else 200,
                        "server.address": chain[depth + 1][0],
                    },
                )
            )
            parent = client
    if failing:
        db = new_id()
        spans.append(
            S(
                "orders-db-proxy",
                "SELECT orders",
                t,
                db,
                parent=parent,
                kind=CLIENT,
                end=at + 0.5,
                error=True,
                attrs={"db.system.name": "postgresql", "peer.service": "orders-db"},
                exception=(
                    "psycopg.OperationalError",
                    f"connection to server at 10.1.2.{int(at) % 250} port 5432 failed: Connection refused",
                    "",
                ),
            )
        )
        ids["db"] = (t, db)
    return spans, ids


def test_cascade_from_database_through_three_services(tmp_path: Path) -> None:
    proc, tel = make_classify(tmp_path)
    # Healthy traffic: the same chain served from cache (no database call) and other frontend pages.
    for i in range(30):
        spans, _ = _cascade_trace(T0 + i, failing=False)
        run(proc, trace_batch(spans, complete_traces=True))
    outs = []
    for i in range(5):
        spans, ids = _cascade_trace(T0 + 40 + i * 5, failing=True)
        outs.append((run(proc, trace_batch(spans, complete_traces=True)), ids))
    out, ids = outs[-1]
    db = out[ids["db"]]
    assert db["errorgate.error.origin"] is True
    assert db["errorgate.error.origin_service"] == "orders-db"
    assert (db["errorgate.error.domain"], db["errorgate.error.component"]) == ("datastore", "orders-db")
    assert db["errorgate.error.category"] == "connection_refused"
    assert db["errorgate.error.kind"] != "cascading"
    for service in ("orders-db-proxy", "payments", "checkout", "frontend"):
        a = out[ids[service]]
        assert a["errorgate.error.kind"] == "cascading", service
        assert a["errorgate.error.origin_service"] == "orders-db", service
        assert "errorgate.error.origin" not in a
    # Severity follows each service's tier and burn: 5 of 35 requests failed (burn > 14.4).
    assert out[ids["checkout"]]["errorgate.severity"] == "P1"  # tier 1
    assert out[ids["payments"]]["errorgate.severity"] == "P1"  # tier 1
    assert out[ids["frontend"]]["errorgate.severity"] == "P2"  # tier 2
    # Same error, different ids (IP in the message) -> one fingerprint.
    assert len({o[i["db"]]["errorgate.error.fingerprint"] for o, i in outs}) == 1
    # Cross-trace: >= 3 services failing with one origin within 2 min -> one incident from the 3rd trace on.
    incident_ids = [o[i["checkout"]].get("errorgate.incident.id") for o, i in outs]
    assert incident_ids[:2] == [None, None]
    assert len(set(incident_ids[2:])) == 1 and incident_ids[2].startswith("inc-")
    (incident,) = proc.incidents.active.values()  # type: ignore[attr-defined]
    assert incident.origin_service == "orders-db"
    assert incident.ranking[0][0] == "orders-db" and incident.ranking[0][1] == 1.0
    assert total(tel, "errorgate_incidents_total", origin_service="orders-db") == 1
    assert total(tel, "errorgate_active_incident_services", service="payments") == 1
    assert total(tel, "errorgate_cascade_errors_total", origin_service="orders-db", role="origin") == 5
    assert total(tel, "errorgate_cascade_errors_total", service="checkout", role="propagated") == 10
    # A log error inside the failing payments span joins the cascade (trace context correlation).
    t, s = ids["payments"]
    (logged,) = run_logs(
        proc,
        log_batch("payments", [log("charge failed for card 4111111111111111", T0 + 61, trace=t, span=s)]),
    )
    assert logged["errorgate.error.kind"] == "cascading"
    assert logged["errorgate.error.origin_service"] == "orders-db"
    assert logged["errorgate.error.template"] == "charge failed for card <num>"
    # The database recovers; two minutes later the incident closes.
    for i in range(5):
        spans, _ = _cascade_trace(T0 + 200 + i, failing=False)
        run(proc, trace_batch(spans, complete_traces=True))
    assert not proc.incidents.active  # type: ignore[attr-defined]
    assert total(tel, "errorgate_active_incident_services", service="payments") == 0


def test_retry_that_succeeds_is_transient(tmp_path: Path) -> None:
    proc, tel = make_classify(tmp_path)

    def call(t: int, parent: int, at: float, status: int, **attrs: object) -> S:
        return S(
            "checkout",
            "POST",
            t,
            new_id(),
            parent=parent,
            kind=CLIENT,
            end=at,
            attrs={"http.response.status_code": status, "server.address": "payments", **attrs},
        )

    # payments has answered 503 every minute for six minutes: the episode alone is persistent.
    for minute in range(6):
        t, root = new_id(), new_id()
        spans = [
            S("checkout", "POST /orders", t, root, end=T0 + minute * 60 + 3),
            call(t, root, T0 + minute * 60 + 1, 503),
        ]
        run(proc, trace_batch(spans, complete_traces=True))
    at = T0 + 6 * 60
    # One more failed call without a retry: persistent, as the episode says.
    t0, root0 = new_id(), new_id()
    alone = call(t0, root0, at + 1, 503)
    out = run(
        proc, trace_batch([S("checkout", "POST /orders", t0, root0, end=at + 3), alone], complete_traces=True)
    )
    assert out[(t0, alone.span)]["errorgate.error.kind"] == "persistent"
    fingerprint = out[(t0, alone.span)]["errorgate.error.fingerprint"]
    # The same failed call whose retry (same trace and parent) then succeeded: transient.
    t, root = new_id(), new_id()
    first = call(t, root, at + 1, 503)
    retry = call(t, root, at + 2, 200, **{"http.request.resend_count": 1})
    out = run(
        proc,
        trace_batch([S("checkout", "POST /orders", t, root, end=at + 3), first, retry], complete_traces=True),
    )
    assert out[(t, first.span)]["errorgate.error.fingerprint"] == fingerprint  # same group, same episode
    assert out[(t, first.span)]["errorgate.error.kind"] == "transient"
    assert "errorgate.error.kind" not in out[(t, retry.span)]
    assert total(tel, "errorgate_retried_operations_total", service="checkout", outcome="succeeded") == 1


def test_late_spans_get_per_span_classification_only(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path)
    t, child = new_id(), new_id()
    late = S(
        "payments",
        "SELECT",
        t,
        child,
        parent=new_id(),
        kind=CLIENT,
        end=T0,
        error=True,
        attrs={"db.system.name": "postgresql", "peer.service": "orders-db"},
        exception=("psycopg.OperationalError", "connection refused", ""),
    )
    a = run(proc, trace_batch([late], late=True))[(t, child)]
    assert a["errorgate.error.category"] == "connection_refused"
    assert a["errorgate.error.domain"] == "datastore"
    assert "errorgate.error.origin" not in a and "errorgate.error.origin_service" not in a


def test_baggage_entries_are_copied_onto_items(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path, baggage=["tenant.id"])
    t, s = new_id(), new_id()
    span = S(
        "frontend",
        "GET /",
        t,
        s,
        end=T0,
        attrs={"http.request.header.baggage": ["tenant.id=acme%20eu;p=1,x=y"]},
    )
    a = run(proc, trace_batch([span]))[(t, s)]
    assert a["tenant.id"] == "acme eu"
    assert "x" not in a  # only the listed keys


def test_catalog_shared_by_the_gateway_wins(tmp_path: Path) -> None:
    import logging

    from errorgate.component import PROCESSORS, ComponentContext, Extensions
    from errorgate.extensions.catalog import CatalogExtension
    from errorgate.governance.catalog import ServiceCatalog, ServiceEntry
    from errorgate.telemetry import Telemetry

    catalog = ServiceCatalog(services={"ledger": ServiceEntry(owner="finance", tier=1, slo=0.99)})
    factory = PROCESSORS.get("classify")
    assert factory is not None
    telemetry = Telemetry()
    context = ComponentContext(
        "classify",
        tmp_path,
        telemetry,
        logging.getLogger("test"),
        extensions=Extensions({"catalog": CatalogExtension(catalog)}),
    )
    factory.create(factory.config_model.model_validate({}), context)
    assert total(telemetry, "errorgate_service_info", service="ledger", team="finance", tier="1") == 1
    assert total(telemetry, "errorgate_service_info", service="checkout") == 0


def test_unreadable_catalog_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    import pytest

    from errorgate.config import ConfigError

    with pytest.raises(ConfigError, match=r"^processors\.classify\.catalog: cannot read service catalog"):
        make_classify(tmp_path, catalog=str(tmp_path / "missing.yaml"))
