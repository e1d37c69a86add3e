"""The Chaos Toolkit experiments (kit/chaos/experiments) through chaoslib's Python API against a
real demo shop and a real errorgate: each journal must be ``completed``, its steady-state
hypothesis met before and after, no method probe or rollback failed. Control runs: with the
breaker taken out of orders the stock-db experiment must fail on its breaker probe, and without
the idempotency middleware the duplicate-submissions experiment must find duplicates. The network
experiments (network namespaces, netem) need root, iproute2 and iptables and are skipped, naming
what is missing, without them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslib.experiment import run_experiment
from chaoslib.loader import load_experiment

from kit.chaos import network
from kit.chaos._shop import load
from kit.chaos.run import EXPERIMENTS, run_one, running_shop, skip_reason, verdict

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_shop(tmp_path_factory.mktemp("chaos")) as state_file:
        yield state_file


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_holds(shop: Path, path: Path) -> None:
    reason = skip_reason(path)
    if reason:
        pytest.skip(reason)
    journal, seconds = run_one(path)
    assert verdict(journal) == [], (path.stem, verdict(journal))
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["steady_states"]["after"]["steady_state_met"] is True
    assert seconds < 60


def test_without_the_breaker_the_experiment_fails(tmp_path: Path) -> None:
    """The pattern is what makes the experiment pass: orders without a breaker keep calling the
    dead inventory, no fallback answer comes, and the breaker probe fails the experiment."""
    experiment: dict[str, Any] = load_experiment(str(EXPERIMENTS[0]))
    probe = next(a for a in experiment["method"] if a["name"] == "breaker-opens-and-orders-get-the-fallback")
    probe["provider"]["arguments"]["max_orders"] = 12  # the breaker opens after 10; enough to show it
    with running_shop(tmp_path, no_breaker=True):
        journal = dict(run_experiment(experiment))
    problems = verdict(journal)
    assert any(p.startswith("breaker-opens-and-orders-get-the-fallback: ") for p in problems), problems
    assert any("the breaker never opened" in p for p in problems), problems


def test_without_idempotency_duplicate_submissions_make_duplicate_orders(tmp_path: Path) -> None:
    """The control run of the duplicate-submissions experiment: orders that ignore the
    Idempotency-Key turn five submissions of one order into several orders and charges."""
    experiment: dict[str, Any] = load_experiment(str(EXPERIMENTS[2]))
    with running_shop(tmp_path, no_idempotency=True):
        journal = dict(run_experiment(experiment))
    problems = verdict(journal)
    assert any(p.startswith("one-order-one-charge: ") for p in problems), problems
    assert any("did not all replay one order" in p for p in problems), problems


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    return {name for name in listed if name.startswith("egchaos-")}


@pytest.mark.skipif(network.unavailable() is not None, reason=str(network.unavailable()))
def test_a_failed_network_experiment_still_removes_its_namespace(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The injection fails half-way (after the namespace, stock-db in it and inventory's switch):
    the experiment fails, and afterwards no namespace, veth or process of it is left and the
    shop takes orders from its own stock-db again."""
    monkeypatch.setenv("SHOP_STATE", str(shop))  # a control run's shop may have set it since
    before = namespaces()
    experiment: dict[str, Any] = load_experiment(str(EXPERIMENTS[6]))  # 07: loss
    step = next(a for a in experiment["method"] if a["name"] == "drop-30-percent-of-stock-db-packets")
    step["provider"]["arguments"] = {"jitter_ms": "lots", "delay_ms": 10}
    journal = dict(run_experiment(experiment))
    problems = verdict(journal)
    assert any(p.startswith("drop-30-percent-of-stock-db-packets: ") for p in problems), problems
    assert namespaces() == before
    state = load({"shop_state": str(shop)})
    assert "netns" not in state
    assert (
        state["inventory"]["argv"][state["inventory"]["argv"].index("--stock-db") + 1]
        == state["stock-db"]["url"]
    )
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert " egc" not in links
