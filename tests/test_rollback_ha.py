"""Exactly once across two errorgate instances: two rollback triggers on one single-member etcd
(Debian's etcd on loopback) judge the same failing deploy again and again → one call. The claim
is a transaction fenced by the leader's token: a standby, and a deposed leader replaying its
old token, record nothing and call nothing."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from errorgate.ha.election import Election
from errorgate.ha.etcd import EtcdClient
from errorgate.ha.ledger import FencedLedger
from errorgate.processors.deploys.rollback import RollbackTrigger
from errorgate.processors.deploys.settings import DeploysConfig, RollbackConfig
from errorgate.processors.deploys.store import VersionStore
from tests.support.etcd import wait_until_writable
from tests.support.gateway import free_port
from tests.test_rollback import Audit, Capture, bad_deploy, capture, rollback_config  # noqa: F401

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
pytestmark = pytest.mark.skipif(
    not Path(ETCD).exists(), reason="needs Debian's etcd-server (make system-deps)"
)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[list[str]]:
    client, peer = free_port(), free_port()
    proc = subprocess.Popen(
        [
            ETCD,
            "--name=solo",
            f"--data-dir={tmp_path / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=solo=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoints = [f"http://127.0.0.1:{client}"]
    wait_until_writable(endpoints, "etcd")
    try:
        yield endpoints
    finally:
        proc.kill()
        proc.wait(5)


def test_two_instances_fire_once(etcd: list[str], capture: Capture) -> None:  # noqa: F811
    deploys = DeploysConfig(rollback=RollbackConfig(**rollback_config(capture.url)))
    elections = [Election(EtcdClient(etcd, timeout=0.5), "/eg-test", f"eg{i}", ttl=3) for i in range(2)]
    for e in elections:
        e.step()
    assert sum(e.is_leader for e in elections) == 1
    audits = [Audit(), Audit()]
    triggers = [
        RollbackTrigger(deploys.rollback, FencedLedger(e), a) for e, a in zip(elections, audits, strict=True)
    ]
    stores = [VersionStore(deploys), VersionStore(deploys)]
    for s in stores:
        bad_deploy(s)  # both instances saw the same traffic: the same failing verdict
    for _ in range(5):
        for trigger, store in zip(triggers, stores, strict=True):
            for e in elections:
                e.step()
            for verdict in trigger.failing(store, deploys.verdict):
                trigger.consider(verdict)
    assert len(capture.by_path("/dispatches")) == 1
    assert len(capture.requests) == 5  # four actions and the annotation, from one instance
    assert sorted(len(a.records) for a in audits) == [0, 1]
    recorded = EtcdClient(etcd).get("/eg-test/actions/rollback/checkout/2.0")
    assert recorded == "1.0"

    # The leader is deposed (its lease revoked, the standby elected); its old token replayed
    # for a new bad deploy is refused by the transaction: nothing recorded, nothing called.
    leader = next(e for e in elections if e.is_leader)
    other = next(e for e in elections if e is not leader)
    old = leader.token
    leader.client.revoke(leader._lease)
    other.step()
    assert other.is_leader and other.token > old
    assert leader.act_once("rollback/checkout/3.0", "2.0", token=old) == (False, "stale")
    assert other.act_once("rollback/checkout/2.0", "1.0") == (False, "done")
    # A later deploy of the same service, within the cooldown (a lease-held key): refused too.
    assert other.act_once("rollback/checkout/3.0", "2.0", cooldown=("rollback/checkout", 60)) == (
        False,
        "cooldown",
    )
    assert len(capture.requests) == 5
