"""The P1 postmortem and its action items as fenced singletons (issue 18): two engines on one
SQLite store, a leader elected on a real three-member etcd cluster (Debian's etcd-server on
loopback), both running the postmortem job at the same time against the loopback Jira (which
checks every request against Jira's published OpenAPI schema): one Jira issue for one P1, one
for each action item. A leader that died after filing but before its store write leaves a
successor that records that issue rather than filing a second one."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from errorgate.config import JiraConfig
from errorgate.ha.election import Election
from errorgate.ha.ledger import FencedLedger
from errorgate.incidents.actions import ActionItems
from errorgate.incidents.engine import Engine
from errorgate.incidents.postmortem import Postmortems
from errorgate.incidents.store import Store
from tests.support.etcd import ETCD, MISSING, etcd_cluster, two_engine_elections
from tests.support.incidents import EngineServer, alert, alertmanager_payload
from tests.support.jira_stub import JiraStub

pytestmark = pytest.mark.skipif(not Path(ETCD).exists(), reason=MISSING)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    with etcd_cluster(tmp_path / "etcd") as running:
        yield running


@pytest.fixture
def jira(monkeypatch: pytest.MonkeyPatch) -> Iterator[JiraStub]:
    monkeypatch.setenv("JIRA_TOKEN", "jira-pat")
    stub = JiraStub()
    yield stub
    stub.stop()


def _postmortems(engine: Engine, jira: JiraStub, election: Election) -> Postmortems:
    cfg = JiraConfig(url=jira.url, project="OPS", token_env="JIRA_TOKEN", poll_interval=3600, review=False)
    return Postmortems(engine, cfg, ledger=FencedLedger(election), actor=f"engine {election.identity}")


def _tick_together(*jobs: Postmortems, rounds: int = 5) -> None:
    """Both instances' workers at once, several times (what two `incidents serve` do)."""
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(pm: Postmortems) -> None:
        try:
            for _ in range(rounds):
                start.wait()
                pm.tick()
        except BaseException as e:  # surfaced below: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(pm,)) for pm in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


def _kinds(engine: Engine, incident_id: int, kind: str) -> list[dict[str, str]]:
    return [e for e in engine.timeline(incident_id) if e["kind"] == kind]


def test_two_engines_on_one_store_file_one_postmortem_and_one_issue_per_action_item(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]], jira: JiraStub, tmp_path: Path
) -> None:
    leader, standby = two_engine_elections(cluster[0])
    url = f"sqlite:///{tmp_path / 'incidents.db'}"
    srv = EngineServer(url)
    other_store = Store(url)
    other = Engine(other_store, clock=srv.clock)
    try:
        assert srv.post_alerts(alertmanager_payload(alert())).status == 200
        [inc] = srv.engine.find()
        jobs = (_postmortems(srv.engine, jira, leader), _postmortems(other, jira, standby))
        _tick_together(*jobs)
        postmortems = [b for b in jira.created if "errorgate-postmortem" in b["fields"]["labels"]]
        assert len(postmortems) == 1
        assert other.get(inc.id).postmortem_key == srv.engine.get(inc.id).postmortem_key == "OPS-1"
        [filed] = _kinds(srv.engine, inc.id, "postmortem")
        assert filed["actor"] == f"engine {leader.identity}"

        for engine, summary in (
            (srv.engine, "Add a timeout to the card gateway"),
            (other, "Alert on queue depth"),
        ):
            ActionItems(engine).add(inc.id, "payments", summary, None, "alice")
        _tick_together(*jobs)
        actions = [b for b in jira.created if "errorgate-action-item" in b["fields"]["labels"]]
        assert sorted(b["fields"]["summary"].split(": ", 1)[1] for b in actions) == [
            "Add a timeout to the card gateway",
            "Alert on queue depth",
        ]
        assert len(jira.links) == 2 and jira.rejected == []
        filed_items = [e for e in _kinds(other, inc.id, "action_item") if " filed" in e["message"]]
        assert [e["actor"] for e in filed_items] == [f"engine {leader.identity}"] * 2
    finally:
        srv.stop()
        other_store.dispose()


def test_a_successor_records_the_postmortem_a_dead_leader_filed_instead_of_filing_another(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]],
    jira: JiraStub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead, successor = two_engine_elections(cluster[0])
    srv = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}")
    try:
        assert srv.post_alerts(alertmanager_payload(alert())).status == 200
        [inc] = srv.engine.find()
        dying = _postmortems(srv.engine, jira, dead)

        def killed(*args: object, **kwargs: object) -> None:
            raise RuntimeError("SIGKILL before the store write")

        with monkeypatch.context() as m, pytest.raises(RuntimeError, match="SIGKILL"):
            m.setattr(srv.engine, "record", killed)
            dying.tick()
        assert len(jira.created) == 1 and srv.engine.get(inc.id).postmortem_key is None
        dead.client.revoke(dead._lease)
        successor.step()
        assert successor.is_leader

        _postmortems(srv.engine, jira, successor).tick()
        assert len(jira.created) == 1  # not filed a second time
        found = srv.engine.get(inc.id)
        assert found.postmortem_key == "OPS-1" and found.postmortem_status == "To Do"
        [entry] = _kinds(srv.engine, inc.id, "postmortem")
        assert "OPS-1" in entry["message"] and "another instance" in entry["message"]
        assert entry["actor"] == f"engine {successor.identity}"
    finally:
        srv.stop()


def test_jira_out_of_reach_delays_the_fenced_filing_but_does_not_cancel_it(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]], jira: JiraStub, tmp_path: Path
) -> None:
    from tests.support.prometheus import free_port

    leader, _ = two_engine_elections(cluster[0])
    srv = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}")
    try:
        assert srv.post_alerts(alertmanager_payload(alert())).status == 200
        [inc] = srv.engine.find()
        cfg = JiraConfig(url=f"http://127.0.0.1:{free_port()}", project="OPS", token_env="JIRA_TOKEN",
                         poll_interval=3600, review=False)  # fmt: skip
        Postmortems(srv.engine, cfg, ledger=FencedLedger(leader), actor="engine eg-leader").tick()
        assert srv.engine.get(inc.id).postmortem_key is None
        _postmortems(srv.engine, jira, leader).tick()  # Jira back: the next tick files it, once
        assert srv.engine.get(inc.id).postmortem_key == "OPS-1" and len(jira.created) == 1
    finally:
        srv.stop()
