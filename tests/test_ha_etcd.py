"""Leader election on a real three-member etcd cluster (Debian's etcd-server) on loopback:
the leader's instance killed → another leads in < 10 s; an old leader's fencing token is
refused; with quorum lost, no instance acts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from errorgate.ha.etcd import EtcdClient
from tests.support.etcd import ETCD, MISSING, etcd_cluster
from tests.support.gateway import ROOT

pytestmark = pytest.mark.skipif(not Path(ETCD).exists(), reason=MISSING)
PREFIX = "/errorgate/test/rollback"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    with etcd_cluster(tmp_path) as running:
        yield running


class Instance:
    def __init__(self, identity: str, endpoints: list[str]) -> None:
        self.identity = identity
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.elector", identity, PREFIX, *endpoints],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.decode().strip())

    def last(self) -> dict[str, int]:
        if not self.lines:
            return {"leader": 0, "token": 0, "acted": 0}
        fields = dict(part.split("=") for part in self.lines[-1].split()[1:])
        return {k: int(v) for k, v in fields.items()}

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)


def _wait(condition: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, what
        time.sleep(0.05)
    return time.monotonic() - start


def test_failover_fencing_and_quorum_loss(cluster: tuple[list[str], list[subprocess.Popen[bytes]]]) -> None:
    endpoints, members = cluster
    instances = [Instance(f"eg{i}", endpoints) for i in range(3)]
    try:
        _wait(lambda: sum(i.last()["leader"] for i in instances) == 1, 20, "no leader elected")
        leader = next(i for i in instances if i.last()["leader"])
        old_token = leader.last()["token"]
        assert leader.last()["acted"] == 1
        assert all(i.last()["acted"] == 0 for i in instances if i is not leader)  # standbys never act

        leader.kill()
        rest = [i for i in instances if i is not leader]
        took = _wait(
            lambda: any(i.last()["leader"] and i.last()["acted"] for i in rest), 10, "no takeover in 10 s"
        )
        assert took < 10
        assert sum(i.last()["leader"] for i in rest) == 1
        new_token = max(i.last()["token"] for i in rest)
        print(f"takeover after SIGKILL of the leader: {took:.2f} s (lease ttl 3 s)")
        assert new_token > old_token

        # The deposed leader's token, replayed (a paused process waking up): refused.
        client = EtcdClient(endpoints, timeout=0.5)
        assert not client.put_if_owner(f"{PREFIX}/leader", old_token, f"{PREFIX}/actions/tick", "stale")
        assert client.put_if_owner(f"{PREFIX}/leader", new_token, f"{PREFIX}/actions/tick", "current")

        # Quorum lost (two of three members gone): within the lease ttl no instance acts.
        for m in members[1:]:
            m.kill()
            m.wait(5)
        time.sleep(3.5)
        seen = {i.identity: len(i.lines) for i in rest}
        time.sleep(2.0)
        for i in rest:
            after = i.lines[seen[i.identity] :]
            assert after and all("acted=0" in line for line in after), after
            assert all("leader=0" in line for line in after), after
    finally:
        for i in instances:
            if i.proc.poll() is None:
                i.kill()
