"""The Chaos Toolkit experiments (kit/chaos/experiments) through chaoslib's Python API against a
real demo shop and a real errorgate: each journal must be ``completed``, its steady-state
hypothesis met before and after, no method probe or rollback failed. And once with the breaker
taken out of orders: the stock-db experiment must then fail on its breaker probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslib.experiment import run_experiment
from chaoslib.loader import load_experiment

from kit.chaos.run import EXPERIMENTS, run_one, running_shop, verdict

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_shop(tmp_path_factory.mktemp("chaos")) as state_file:
        yield state_file


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_holds(shop: Path, path: Path) -> None:
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
