"""The incident engine on two instances (one shared SQLite store) with a leader elected on a
real three-member etcd cluster (Debian's etcd-server on loopback): only the leader pages, each
level exactly once across both (a loopback PagerDuty Events v2 stand-in counts the pages); the
leader SIGKILLed between levels → the other pages the next level once and never the first
again; with etcd's quorum lost nobody pages; a deposed leader's stale fencing token creates no
Alertmanager silence (a real Alertmanager)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from errorgate.config import EscalationDeliveryConfig, SilenceConfig
from errorgate.governance.catalog import load_catalog
from errorgate.governance.oncall import load_oncall
from errorgate.ha.ledger import FencedLedger
from errorgate.incidents.escalation import Escalator
from errorgate.incidents.notify import channels
from errorgate.incidents.silences import AlertmanagerSilences, Silencer
from tests.support.alertmanager import ALERTMANAGER, start_alertmanager
from tests.support.alertmanager import MISSING as NO_ALERTMANAGER
from tests.support.capture_server import Captured, CaptureServer
from tests.support.etcd import ETCD, MISSING, etcd_cluster, two_engine_elections
from tests.support.gateway import ROOT, free_port, gateway_yaml
from tests.support.incidents import TOKEN, Clock, EngineServer, alert, alertmanager_payload, call
from tests.test_incidents_escalation import PAGERDUTY_EVENT

pytestmark = pytest.mark.skipif(not Path(ETCD).exists(), reason=MISSING)
ONCALL = ROOT / "governance" / "oncall.yaml"
LEASE_TTL = 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    with etcd_cluster(tmp_path / "etcd") as running:
        yield running


@pytest.fixture
def pagerduty() -> Iterator[CaptureServer]:
    with CaptureServer() as capture:
        yield capture


def _oncall(tmp_path: Path, waits: tuple[float, float]) -> Path:
    """The bundled on-call file with payments paging two levels through PagerDuty, ``waits``
    seconds apart, once (no repeat): a test can wait for the whole chain."""
    spec = yaml.safe_load(ONCALL.read_text())
    spec["teams"]["payments"]["channels"] = ["pagerduty"]
    spec["teams"]["payments"]["escalation"] = {
        "repeat": 0,
        "levels": [
            {"notify": ["primary"], "wait": f"{waits[0]}s"},
            {"notify": ["secondary"], "wait": f"{waits[1]}s"},
        ],
    }
    path = tmp_path / "oncall.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class Instance:
    """``errorgate incidents serve`` in a process of its own (so a test can SIGKILL it)."""

    def __init__(self, tmp_path: Path, identity: str, etcd: list[str], capture: str, oncall: Path) -> None:
        self.identity = identity
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp_path / f"{identity}.yaml"
        config.write_text(
            gateway_yaml(tmp_path / identity, exporter="  debug: {verbosity: basic}", exporter_id="debug")
            + f"""
incidents:
  endpoint: 127.0.0.1:{self.port}
  store: sqlite:///{tmp_path / "incidents.db"}
  oncall: {oncall}
  escalation:
    check_interval: 0.2s
    pagerduty: {{url: "{capture}/v2/enqueue", routing_key_env: PD_KEY}}
ha:
  etcd: {{endpoints: [{", ".join(etcd)}], timeout: 0.5s}}
  lease_ttl: {LEASE_TTL}
  prefix: /errorgate-test
  identity: {identity}
"""
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ERRORGATE_INCIDENTS_TOKEN": TOKEN,
            "PD_KEY": "R0UT1NGKEY",
        }
        self.log = (tmp_path / f"{identity}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "errorgate", "incidents", "serve", "--config", str(config)],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def leads(self) -> bool:
        """What the instance's /metrics says (``errorgate_ha_leader{role="incidents"}``)."""
        reply = call("GET", f"{self.url}/metrics", token=None)
        found = re.search(r'^errorgate_ha_leader\{role="incidents"\} (\S+)$', str(reply.body), re.M)
        return found is not None and float(found.group(1)) == 1.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., list[Instance]]]:
    started: list[Instance] = []

    def run(etcd: list[str], capture: CaptureServer, waits: tuple[float, float]) -> list[Instance]:
        oncall = _oncall(tmp_path, waits)
        for i in range(2):  # one after the other: the first creates the shared store's tables
            started.append(Instance(tmp_path, f"eg{i}", etcd, capture.url, oncall))
            _wait(lambda: _answers(started[-1]), 30, f"eg{i} did not start")
        _wait(lambda: sum(_safe_leads(i) for i in started) == 1, 30, "no instance leads")
        return started

    yield run
    for instance in started:
        if instance.alive():
            instance.proc.send_signal(signal.SIGTERM)
            try:
                instance.proc.wait(10)
            except subprocess.TimeoutExpired:
                instance.kill()
        instance.log.close()


def _answers(instance: Instance) -> bool:
    assert instance.alive(), f"{instance.identity} exited: see {instance.log.name}"
    try:
        return call("GET", f"{instance.url}/healthz", token=None).status == 200
    except OSError:
        return False


def _safe_leads(instance: Instance) -> bool:
    try:
        return instance.alive() and instance.leads()
    except (OSError, ValueError):
        return False  # not listening yet


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, what
        time.sleep(0.05)
    return time.monotonic() - began


def _level(page: Captured) -> int:
    return int(page.body["payload"]["custom_details"]["escalation_level"])


def _triggers(capture: CaptureServer) -> list[int]:
    return [_level(r) for r in capture.of("pagerduty") if r.body["event_action"] == "trigger"]


def _open_p1(instance: Instance) -> str:
    reply = call("POST", f"{instance.url}/api/v1/alerts/alertmanager", alertmanager_payload(alert()))
    assert reply.status == 200, reply.body
    [inc] = call("GET", f"{instance.url}/api/v1/incidents", token=None).body["incidents"]
    return str(inc["id"])


def _escalations(instance: Instance, incident_id: str) -> list[dict[str, Any]]:
    doc = call("GET", f"{instance.url}/api/v1/incidents/{incident_id}", token=None).body
    return [e for e in doc["timeline"] if e["kind"] == "escalated"]


def test_each_level_is_paged_exactly_once_across_two_instances(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]],
    pagerduty: CaptureServer,
    start: Callable[..., list[Instance]],
) -> None:
    instances = start(cluster[0], pagerduty, (2, 2))
    leader = next(i for i in instances if i.leads())
    standby = next(i for i in instances if i is not leader)
    incident_id = _open_p1(standby)  # the webhook may reach either: both serve the API
    pagerduty.wait_for("pagerduty", count=2, timeout=20)
    time.sleep(3)  # two more waits' worth of ticks on both instances: nothing more is sent
    assert _triggers(pagerduty) == [1, 2]
    for page in pagerduty.requests:
        jsonschema.validate(page.body, PAGERDUTY_EVENT)
    assert [e["actor"] for e in _escalations(standby, incident_id)] == [f"engine {leader.identity}"] * 2


def test_a_standby_takes_over_the_schedule_without_paging_a_level_again(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]],
    pagerduty: CaptureServer,
    start: Callable[..., list[Instance]],
) -> None:
    wait = 8.0  # longer than the lease ttl: the standby leads before level 2 is due
    instances = start(cluster[0], pagerduty, (wait, wait))
    leader = next(i for i in instances if i.leads())
    other = next(i for i in instances if i is not leader)
    incident_id = _open_p1(leader)
    [first] = pagerduty.wait_for("pagerduty", timeout=10)
    paged_at = time.monotonic()
    _wait(lambda: len(_escalations(leader, incident_id)) == 1, 5, "level 1 is not on the timeline")
    leader.kill()
    took = _wait(other.leads, 2 * LEASE_TTL, "the standby did not take over")
    print(f"standby leads {took:.2f} s after SIGKILL of the leader (lease ttl {LEASE_TTL} s)")
    assert took <= LEASE_TTL * 4 / 3 + 0.5  # the lease's ttl and one election round (ttl / 3)
    pagerduty.wait_for("pagerduty", count=2, timeout=wait + 10)
    level_2_after = time.monotonic() - paged_at
    print(f"level 2 paged {level_2_after:.2f} s after level 1 (wait {wait} s)")
    assert wait - 0.5 <= level_2_after <= wait + 1.5  # on time: the schedule went on where it was
    time.sleep(2)
    assert _triggers(pagerduty) == [1, 2]
    actors = [e["actor"] for e in _escalations(other, incident_id)]
    assert actors == [f"engine {leader.identity}", f"engine {other.identity}"]
    assert _level(first) == 1


def test_with_quorum_lost_nobody_pages(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]],
    pagerduty: CaptureServer,
    start: Callable[..., list[Instance]],
) -> None:
    endpoints, members = cluster
    wait = 4.0
    instances = start(endpoints, pagerduty, (wait, wait))
    _open_p1(instances[0])
    pagerduty.wait_for("pagerduty", timeout=10)
    for member in members[1:]:  # two of three etcd members gone: no quorum
        member.kill()
        member.wait(5)
    time.sleep(wait + LEASE_TTL + 2)  # level 2 long due
    assert _triggers(pagerduty) == [1]
    assert not any(i.leads() for i in instances)


@pytest.mark.skipif(ALERTMANAGER is None, reason=NO_ALERTMANAGER)
def test_a_deposed_leaders_stale_token_creates_no_silence(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    endpoints = cluster[0]
    leader, other = two_engine_elections(endpoints)
    srv = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}", clock=time.time)  # type: ignore[arg-type]
    with start_alertmanager(tmp_path) as am:
        try:
            payload = alertmanager_payload(
                alert("checkout", "P1", fingerprint="c1", origin_service="payments"),
                alert("payments", "P2", fingerprint="p1", origin_service="payments"),
            )
            assert srv.post_alerts(payload).status == 200
            [inc] = srv.incidents()
            config = SilenceConfig(alertmanager=am.url)
            deposed, successor = (
                Silencer(srv.engine, config, AlertmanagerSilences(am.url, None), FencedLedger(e), f"engine {e.identity}")
                for e in (leader, other)
            )  # fmt: skip

            # The leader is deposed (its lease gone, the other elected) but still believes it
            # leads (a paused process waking up): its token is stale, etcd refuses the claim.
            old = leader.token
            leader.client.revoke(leader._lease)
            other.step()
            assert other.is_leader and other.token > old and leader.token == old
            deposed.tick()
            assert am.silences() == []
            successor.tick()
            deposed.tick()
            [silence] = am.silences()
            assert silence["status"]["state"] == "active"

            assert srv.action(inc["id"], "resolve", by="alice").status == 200
            deposed.tick()
            assert am.silences()[0]["status"]["state"] == "active"  # only the leader expires it
            successor.tick()
            assert am.silences()[0]["status"]["state"] == "expired"
        finally:
            srv.stop()


def test_a_page_claimed_by_a_leader_that_died_before_recording_it_is_not_sent_again(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]],
    pagerduty: CaptureServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoints = cluster[0]
    dead, successor = two_engine_elections(endpoints)
    monkeypatch.setenv("PD_KEY", "R0UT1NGKEY")
    paging = channels(EscalationDeliveryConfig.model_validate({"pagerduty": {"url": f"{pagerduty.url}/v2/enqueue", "routing_key_env": "PD_KEY"}}))  # fmt: skip
    srv = EngineServer(
        f"sqlite:///{tmp_path / 'i.db'}", clock=Clock(datetime(2025, 6, 16, 10, tzinfo=UTC).timestamp())
    )
    try:
        assert srv.post_alerts(alertmanager_payload(alert())).status == 200
        [inc] = srv.engine.find()
        # The leader claimed level 1 (and paged) at 10:00, then died before its store write.
        assert FencedLedger(dead).claim(f"{inc.claim_key}/page/0", repr(srv.clock.now)) == (True, "")
        dead.client.revoke(dead._lease)
        successor.step()
        escalator = Escalator(srv.engine, load_oncall(None, load_catalog()), paging, srv.url,
                              FencedLedger(successor), "engine eg-successor")  # fmt: skip
        srv.clock.now += 5
        escalator.tick()
        assert pagerduty.requests == []  # level 1 is not paged again
        [entry] = [e for e in srv.engine.timeline(inc.id) if e["kind"] == "escalated"]
        assert "already paged" in entry["message"]
        srv.clock.now += 600 - 5 - 1  # level 2 is due 10 minutes after the claim, not after the takeover
        escalator.tick()
        assert pagerduty.requests == []
        srv.clock.now += 1
        escalator.tick()
        assert _triggers(pagerduty) == [2]
    finally:
        srv.stop()
