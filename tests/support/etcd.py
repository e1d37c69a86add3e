"""etcd in the tests (Debian's etcd-server on loopback): start a cluster, wait until it
answers writes."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from errorgate.ha.election import Election
from errorgate.ha.etcd import EtcdClient, EtcdUnavailable
from tests.support.gateway import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
MISSING = "needs Debian's etcd-server (make system-deps)"


def wait_until_writable(endpoints: list[str], what: str, timeout: float = 20) -> None:
    """Block until a put succeeds (a cluster has formed and elected its leader)."""
    client = EtcdClient(endpoints, timeout=0.5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.call("kv/put", {"key": "aGVsbG8=", "value": "d29ybGQ="})
            return
        except EtcdUnavailable:
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.1)


@contextmanager
def etcd_cluster(
    workdir: Path, members: int = 3
) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    """A fresh cluster of ``members`` etcd processes on loopback (their own ports and data
    dirs under ``workdir``), writable when yielded: (client URLs, processes); killed at exit."""
    names = [f"m{i}" for i in range(members)]
    client = {n: free_port() for n in names}
    peer = {n: free_port() for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{peer[n]}" for n in names)
    procs = []
    for n in names:
        procs.append(
            subprocess.Popen(
                [
                    ETCD,
                    f"--name={n}",
                    f"--data-dir={workdir / n}",
                    f"--listen-client-urls=http://127.0.0.1:{client[n]}",
                    f"--advertise-client-urls=http://127.0.0.1:{client[n]}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer[n]}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer[n]}",
                    f"--initial-cluster={initial}",
                    "--initial-cluster-state=new",
                    "--initial-cluster-token=errorgate-test",
                    "--heartbeat-interval=50",
                    "--election-timeout=500",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    endpoints = [f"http://127.0.0.1:{client[n]}" for n in names]
    try:
        wait_until_writable(endpoints, "etcd cluster")
        yield endpoints, procs
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


def two_engine_elections(endpoints: list[str]) -> tuple[Election, Election]:
    """Two incident engines' elections on the cluster, each stepped once: (the leader, the other)."""
    elections = [
        Election(EtcdClient(endpoints, timeout=0.5), "/eg-test/incidents", f"eg{i}") for i in range(2)
    ]
    for e in elections:
        e.step()
    leader = next(e for e in elections if e.is_leader)
    return leader, next(e for e in elections if e is not leader)
