"""Error metrics as Prometheus exposes them: parsed with prometheus_client's parser, counts that
balance, catalog thresholds as gauges, and label caps turning overflow into ``_other``."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from errorgate.governance.catalog import load_catalog
from tests.test_classify_support import (
    CLIENT,
    T0,
    S,
    log,
    log_batch,
    make_classify,
    new_id,
    run,
    run_logs,
    samples,
    total,
    trace_batch,
)


def test_metric_families_and_counts_balance(tmp_path: Path) -> None:
    proc, tel = make_classify(tmp_path)
    spans = [S("checkout", "POST /orders", new_id(), new_id(), end=T0 + i) for i in range(7)]
    t, root, call = new_id(), new_id(), new_id()
    spans += [
        S(
            "checkout",
            "POST /orders",
            t,
            root,
            end=T0 + 9,
            error=True,
            attrs={"http.response.status_code": 502},
        ),
        S(
            "checkout",
            "charge",
            t,
            call,
            parent=root,
            kind=CLIENT,
            end=T0 + 8.5,
            attrs={"rpc.grpc.status_code": 14, "rpc.service": "payments.Charge"},
        ),
    ]
    run(proc, trace_batch(spans, complete_traces=True))
    run(
        proc,
        trace_batch(
            [
                S(
                    "checkout",
                    "POST /orders",
                    new_id(),
                    new_id(),
                    end=T0 + 10,
                    version="1.1.0",
                    error=True,
                    exception=("ValueError", "amount must be positive", ""),
                )
            ]
        ),
    )
    logs = [log("payment declined", T0 + 11), log("all good", T0 + 12, severity=9)]
    run_logs(proc, log_batch("payments", logs))

    text = generate_latest(tel.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "errorgate_requests",
        "errorgate_errors",
        "errorgate_errors_by_version",
        "errorgate_error_episodes",
        "errorgate_new_fingerprints",
        "errorgate_cascade_errors",
        "errorgate_error_rate_threshold",
        "errorgate_slo_objective",
        "errorgate_service_info",
    ):
        assert name in families, name
    assert total(tel, "errorgate_requests_total", service="checkout") == 9  # SERVER spans only
    assert total(tel, "errorgate_requests_total", service="payments") == 0  # logs are not requests
    assert total(tel, "errorgate_errors_total") == 4  # 3 failing spans + 1 error log; the INFO log is healthy
    rows = {tuple(sorted(lbl.items())): v for lbl, v in samples(tel, "errorgate_errors_total")}
    key = (
        ("category", "dependency_unavailable"),
        ("component", "payments.Charge"),
        ("domain", "dependency"),
        ("kind", "transient"),
        ("service", "checkout"),
        ("severity", "P4"),
    )
    assert rows[key] == 1
    assert total(tel, "errorgate_errors_by_version_total", service="checkout", version="1.1.0") == 1
    assert total(tel, "errorgate_errors_by_version_total", service="checkout") == 3
    # Requests per deployment: the 9 SERVER spans, 8 of version 1.0.0 (1 failed), 1 of 1.1.0 (failed).
    assert total(tel, "errorgate_requests_by_version_total", service="checkout", version="1.0.0") == 8
    assert total(tel, "errorgate_requests_by_version_total", service="checkout", version="1.1.0") == 1
    assert total(tel, "errorgate_failed_requests_by_version_total", service="checkout", version="1.0.0") == 1
    assert total(tel, "errorgate_failed_requests_by_version_total", service="checkout", version="1.1.0") == 1
    assert total(tel, "errorgate_new_fingerprints_total") == total(tel, "errorgate_error_episodes_total") == 4
    assert (
        total(
            tel,
            "errorgate_cascade_errors_total",
            service="checkout",
            origin_service="payments.Charge",
            role="propagated",
        )
        == 1
    )
    # Catalog facts the alert rules join on.
    assert total(tel, "errorgate_error_rate_threshold", service="checkout", level="alert") == 30
    assert total(tel, "errorgate_error_rate_threshold", service="checkout", level="review") == 5
    assert total(tel, "errorgate_slo_objective", service="payments") == 0.9995
    assert total(tel, "errorgate_service_info", service="checkout", team="payments", tier="1") == 1


def test_label_caps_fold_overflow_into_other(tmp_path: Path) -> None:
    known = len(load_catalog().services)  # catalog services are registered first
    proc, tel = make_classify(tmp_path, metrics={"label_caps": {"service": known + 2, "category": 3}})
    messages = ["timed out", "connection refused", "rate limit hit", "invalid input", "quota exceeded"]
    for i in range(6):
        spans = [
            S(
                f"svc-{i}",
                "op",
                new_id(),
                new_id(),
                end=T0 + i,
                error=True,
                exception=("RuntimeError", messages[i % len(messages)], ""),
            )
        ]
        run(proc, trace_batch(spans))
    services = {lbl["service"] for lbl, _ in samples(tel, "errorgate_errors_total")}
    assert services == {"svc-0", "svc-1", "_other"}
    categories = {lbl["category"] for lbl, _ in samples(tel, "errorgate_errors_total")}
    assert categories == {"timeout", "connection_refused", "rate_limited", "_other"}
    assert total(tel, "errorgate_errors_total") == 6  # nothing lost, only folded
    assert total(tel, "errorgate_errors_total", service="_other") == 4
    assert total(tel, "errorgate_requests_total", service="_other") == 4
    # Unknown services past the cap export no threshold rows (an _other row would mix services).
    assert {lbl["service"] for lbl, _ in samples(tel, "errorgate_error_rate_threshold")} >= {
        "svc-0",
        "checkout",
    }
    assert "_other" not in {lbl["service"] for lbl, _ in samples(tel, "errorgate_error_rate_threshold")}


def test_unknown_config_key_is_rejected() -> None:
    import pytest
    from pydantic import ValidationError

    from errorgate.component import PROCESSORS

    factory = PROCESSORS.get("classify")
    assert factory is not None
    with pytest.raises(ValidationError, match=r"episodes\.bucket_size"):
        factory.config_model.model_validate({"episodes": {"bucket_size": "1m"}})
    assert factory.config_model.model_validate({"episodes": {"bucket": "30s"}}).episodes.bucket == 30.0  # type: ignore[attr-defined]
