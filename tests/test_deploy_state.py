"""Per-version state ages out (deploys never saturate the version label), the Fisher test's
numbers, and routing health's levels and hysteresis, on classify built directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from errorgate.component import HttpQuery
from errorgate.processors.deploys.health import RoutingHealth
from errorgate.processors.deploys.settings import DeploysConfig
from errorgate.processors.deploys.stats import fisher_greater
from errorgate.processors.deploys.store import VersionStore
from tests.test_classify_support import T0, S, make_classify, new_id, run, samples, trace_batch


def _requests(service: str, version: str, at: float, n: int, failed: int = 0) -> list[S]:
    return [
        S(service, "GET /x", new_id(), new_id(), end=at + i * 0.01, version=version, error=i < failed)
        for i in range(n)
    ]


def test_versions_age_out_so_later_deploys_keep_their_label(tmp_path: Path) -> None:
    """600 deploys, an hour apart: past the 500-value cap, the newest still reads as itself
    (before, every version after the 500th read ``_other`` forever)."""
    proc, tel = make_classify(tmp_path)
    for i in range(600):
        run(proc, trace_batch(_requests("checkout", f"1.{i}", T0 + i * 3600, 2, failed=1)))
    versions = {lbl["version"] for lbl, _ in samples(tel, "errorgate_requests_by_version_total")}
    assert "1.599" in versions and "_other" not in versions
    assert len(versions) <= 8  # 6h of deploys an hour apart, plus the one ageing out now
    assert {
        lbl["version"] for lbl, _ in samples(tel, "errorgate_failed_requests_by_version_total")
    } == versions
    # The verdict route no longer knows an aged-out version, and says so.
    answer = proc.answer(
        HttpQuery("GET", "/api/v1/verdict", {"service": "checkout", "candidate": "1.599", "baseline": "1.0"})
    )
    assert answer.status == 404 and "baseline version '1.0'" in str(answer.body["error"])


def test_version_ttl_is_configurable(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path, deploys={"version_ttl": "30m"})
    run(proc, trace_batch(_requests("a", "1", T0, 3)))
    run(proc, trace_batch(_requests("a", "2", T0 + 1200, 3)))
    run(proc, trace_batch(_requests("a", "3", T0 + 2400, 3)))
    answer = proc.answer(
        HttpQuery("GET", "/api/v1/verdict", {"service": "a", "candidate": "3", "baseline": "2"})
    )
    assert answer.status == 200
    assert "versions seen: 2, 3" in str(
        proc.answer(
            HttpQuery("GET", "/api/v1/verdict", {"service": "a", "candidate": "3", "baseline": "1"})
        ).body
    )


def test_windows_longer_than_retention_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"deploys.verdict.window \(7200s\) exceeds deploys.retention"):
        DeploysConfig.model_validate({"verdict": {"window": "2h"}})


def test_fisher_one_sided_matches_known_values() -> None:
    # [[8, 2], [1, 5]]: P(X >= 8) = (C(9,8) C(7,2) + C(9,9) C(7,1)) / C(16,10) = 196 / 8008
    assert fisher_greater(8, 10, 1, 6) == pytest.approx(196 / 8008, rel=1e-9)
    assert fisher_greater(6, 600, 6, 600) > 0.5
    assert fisher_greater(36, 600, 6, 600) < 1e-5
    assert fisher_greater(0, 100, 5, 100) == 1.0


def _health(clock: list[float]) -> tuple[VersionStore, RoutingHealth]:
    config = DeploysConfig.model_validate({"health": {"recover_after": "30s"}})
    store = VersionStore(config)
    return store, RoutingHealth(config.health, store, clock=lambda: clock[0])


def test_health_levels_from_burn_and_kinds() -> None:
    clock = [0.0]
    store, health = _health(clock)
    store.record_requests("a", "1", T0, 1000, 1)  # 0.1 % of a 99.9 % SLO: burn 1
    assert health.assess("a", 0.999)["status"] == "pass"
    store.record_requests("b", "1", T0, 1000, 8)  # burn 8: slow
    assert health.assess("b", 0.999)["status"] == "warn"
    store.record_requests("c", "1", T0, 1000, 20)  # burn 20: fast
    body = health.assess("c", 0.999)
    assert body["status"] == "fail" and "fast burn" in body["output"]
    store.record_requests("d", "1", T0, 1000, 2)  # burn 2: kinds count
    store.record_error("d", "1", "fp1", T0, "intermittent")
    assert health.assess("d", 0.999)["status"] == "warn"
    store.record_error("d", "1", "fp2", T0, "persistent")
    assert health.assess("d", 0.999)["status"] == "fail"
    store.record_requests("e", "1", T0, 1000, 2)
    store.record_error("f", "1", "fp3", T0, "cascading", cascade_origin="e")
    assert health.assess("e", 0.999)["output"] == "origin of a cascading failure"
    store.record_requests("g", "1", T0, 1000, 0)  # a persistent group costing no budget: no pull
    store.record_error("g", "1", "fp4", T0, "persistent")
    assert health.assess("g", 0.999)["status"] == "pass"


def test_health_hysteresis_holds_a_worse_state() -> None:
    clock = [0.0]
    store, health = _health(clock)
    store.record_requests("a", "1", T0, 100, 1)
    store.record_error("a", "1", "fp", T0, "persistent")
    assert health.assess("a", 0.999)["status"] == "fail"
    # The persistent group stops; the raw state recovers 5 minutes of telemetry later...
    store.record_requests("a", "1", T0 + 400, 100, 0)
    clock[0] = 1.0
    body = health.assess("a", 0.999)
    assert body["status"] == "fail" and "now pass" in body["notes"][0]
    clock[0] = 20.0
    assert health.assess("a", 0.999)["status"] == "fail"
    clock[0] = 31.5  # ...and the route sees it only once it has held for recover_after
    assert health.assess("a", 0.999)["status"] == "pass"


def test_health_route_unknown_service(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path)
    answer = proc.answer(HttpQuery("GET", "/api/v1/services/ghost/health"))
    assert answer.status == 404 and "'ghost'" in str(answer.body["output"])
