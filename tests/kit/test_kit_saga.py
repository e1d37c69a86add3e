"""saga: steps persisted in SQLite or PostgreSQL; a failure compensates the started steps newest
first, each once; a process killed mid-saga is compensated by recover() (on PostgreSQL, by
another process reading the same database); spans and events show it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from errorgate_kit.saga import Saga, SagaStore, Step
from opentelemetry.trace import StatusCode


def steps(log: list[str], fail_at: str | None = None) -> list[Step]:
    def action(name: str):  # type: ignore[no-untyped-def]
        def run(data: dict) -> str:
            log.append(f"do {name}")
            if name == fail_at:
                raise ConnectionError(f"{name} unavailable")
            return f"{name}-ok"

        return run

    def undo(name: str):  # type: ignore[no-untyped-def]
        return lambda data: log.append(f"undo {name}")

    return [Step(n, action(n), undo(n)) for n in ("reserve", "charge", "ship")]


def test_success_persists_and_a_rerun_does_nothing(spans, tmp_path: Path) -> None:
    log: list[str] = []
    saga = Saga("checkout", steps(log), SagaStore(f"sqlite:///{tmp_path / 's.db'}"))
    result = saga.run("order-1", {"order": 1})
    assert result.status == "completed" and result.data["charge"] == "charge-ok"
    assert saga.run("order-1", {"order": 1}).status == "completed"
    assert log == ["do reserve", "do charge", "do ship"]
    assert [s.name for s in spans.all()] == [
        "saga.step reserve",
        "saga.step charge",
        "saga.step ship",
        "saga checkout",
    ]


def test_failure_compensates_lifo_with_events(spans) -> None:
    log: list[str] = []
    saga = Saga("checkout", steps(log, fail_at="ship"), SagaStore())
    result = saga.run("order-2", {})
    assert result.status == "compensated" and "ship unavailable" in result.error
    assert log == ["do reserve", "do charge", "do ship", "undo ship", "undo charge", "undo reserve"]
    top = spans.named("saga checkout")[0]
    assert top.status.status_code is StatusCode.ERROR and top.attributes["saga.status"] == "compensated"
    assert [e.attributes["saga.step"] for e in top.events if e.name == "saga.compensation"] == [
        "ship",
        "charge",
        "reserve",
    ]
    assert spans.named("saga.step ship")[0].attributes["error.type"] == "ConnectionError"


def test_failed_compensation_is_retried_by_recover_without_repeating_done_ones(spans) -> None:
    log: list[str] = []
    flaky = {"fail": True}
    base = steps(log, fail_at="ship")

    def undo_charge(data: dict) -> None:
        if flaky["fail"]:
            raise ConnectionError("refund service down")
        log.append("undo charge")

    saga = Saga("checkout", [base[0], Step("charge", base[1].action, undo_charge), base[2]], SagaStore())
    assert saga.run("order-3", {}).status == "compensation_failed"
    flaky["fail"] = False
    assert [r.status for r in saga.recover()] == ["compensated"]
    assert log.count("undo ship") == 1 and log[-2:] == ["undo charge", "undo reserve"]


CHILD = textwrap.dedent(
    """
    import json, os, sys
    from errorgate_kit.saga import Saga, SagaStore, Step
    log = open(sys.argv[2], "a")
    def act(name):
        def run(data):
            log.write(f"do {name}\\n"); log.flush()
            if name == "charge":
                os._exit(9)  # the process dies mid-step: no exception handler runs
            return name
        return run
    saga = Saga("checkout", [Step(n, act(n), lambda d: None) for n in ("reserve", "charge", "ship")],
                SagaStore(sys.argv[1]))
    saga.run("order-4", {"order": 4})
    """
)


@pytest.fixture(params=["sqlite", "postgres"])
def saga_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    url: str = request.getfixturevalue("postgres_url")
    SagaStore(url)._exec("TRUNCATE sagas, saga_steps", ())
    return url


def test_crash_mid_saga_is_compensated_on_recovery(spans, tmp_path: Path, saga_url: str) -> None:
    log_file = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", CHILD, saga_url, str(log_file)], env=env, timeout=60)
    assert proc.returncode == 9
    assert log_file.read_text().split("\n")[:2] == ["do reserve", "do charge"]
    undone: list[str] = []
    recovered = Saga(
        "checkout",
        [
            Step(n, lambda d: pytest.fail("no step runs on recovery"), lambda d, n=n: undone.append(n))
            for n in ("reserve", "charge", "ship")
        ],
        SagaStore(saga_url),
    )
    results = recovered.recover()
    assert [(r.saga_id, r.status) for r in results] == [("order-4", "compensated")]
    assert undone == ["charge", "reserve"]  # the step caught mid-flight too: its outcome is unknown
    assert recovered.recover() == []
    assert spans.named("saga checkout")[0].attributes["saga.recovered"] is True


def test_success_and_failure_on_postgres_match_sqlite(spans, postgres_url: str) -> None:
    store = SagaStore(postgres_url)
    store._exec("TRUNCATE sagas, saga_steps", ())
    log: list[str] = []
    assert Saga("checkout", steps(log), store).run("pg-1", {"order": 1}).status == "completed"
    assert Saga("checkout", steps(log), SagaStore(postgres_url)).run("pg-1", {}).status == "completed"
    failed = Saga("checkout", steps(log, fail_at="ship"), store).run("pg-2", {})
    assert failed.status == "compensated" and "ship unavailable" in failed.error
    assert log == ["do reserve", "do charge", "do ship"] * 2 + ["undo ship", "undo charge", "undo reserve"]
    assert store.load("pg-2") is not None and store.load("pg-2")[1] == "compensated"  # type: ignore[index]


def test_bad_input_is_refused_before_anything_is_stored(spans) -> None:
    store = SagaStore()
    saga = Saga("s", steps([]), store)
    with pytest.raises(TypeError):
        saga.run("x", {"when": object()})
    assert store.load("x") is None
    with pytest.raises(ValueError, match="unique"):
        Saga("s", steps([]) + steps([]), store)
    with pytest.raises(ValueError, match=r"scheme 'mysql'.*postgresql://") as e:
        SagaStore("mysql://app:s3cret@db/sagas")
    assert "s3cret" not in str(e.value)
    assert json.dumps({})
