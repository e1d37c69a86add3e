"""etcd in the tests: wait until a (real, loopback) cluster answers writes."""

from __future__ import annotations

import time

from errorgate.ha.etcd import EtcdClient, EtcdUnavailable


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
