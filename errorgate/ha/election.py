"""Active/standby for a singleton role: the instance holding ``<prefix>/leader`` under its lease
leads. The fencing token is the key's create revision: every action is a transaction that
succeeds only while that key still exists with that revision, so a deposed leader (paused, cut
off, its lease expired and a successor elected) cannot act, whatever it believes.

Losing quorum: etcd answers no write, so no keepalive succeeds and no fenced action commits;
the leader also stops believing it leads once ``ttl`` has passed since its last keepalive.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from errorgate.ha.etcd import EtcdClient, EtcdUnavailable

log = logging.getLogger("errorgate.ha")


def from_config(ha: Any, role: str) -> Election:
    """An election for ``role`` from the ``ha:`` settings (``errorgate.config.HaConfig``)."""
    identity = ha.identity or f"{socket.gethostname()}:{os.getpid()}"
    client = EtcdClient(list(ha.etcd.endpoints), timeout=ha.etcd.timeout)
    return Election(client, f"{ha.prefix.rstrip('/')}/{role}", identity, ttl=ha.lease_ttl)


def export_leadership(election: Election, registry: CollectorRegistry, role: str) -> None:
    """``errorgate_ha_leader{role}`` on ``registry``: 1 while this instance leads ``role`` (what
    an operator checks to see which instance acts)."""
    gauge = Gauge(
        "errorgate_ha_leader", "1 while this instance leads the singleton role", ["role"], registry=registry
    )
    gauge.labels(role).set_function(lambda: float(election.is_leader))


class Election:
    def __init__(self, client: EtcdClient, prefix: str, identity: str, ttl: int = 3) -> None:
        self.client = client
        self.key = f"{prefix.rstrip('/')}/leader"
        self.prefix = prefix.rstrip("/")
        self.identity = identity
        self.ttl = ttl
        self._lease = 0
        self._token = 0
        self._valid_until = 0.0  # monotonic: the lease surely lives until then
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> int:
        """The fencing token while this instance leads, else 0."""
        return self._token if time.monotonic() < self._valid_until else 0

    @property
    def is_leader(self) -> bool:
        return self.token != 0

    def step(self) -> None:
        """One round: keep the lease alive (or get one) and try to lead."""
        start = time.monotonic()
        try:
            if not self._lease or self.client.keepalive(self._lease) <= 0:
                self._lease, self._token = self.client.grant(self.ttl), 0
            # Counted from before the call: the lease surely outlives this by its ttl.
            self._valid_until = start + self.ttl * 0.8
            created, revision = self.client.create_if_absent(self.key, self.identity, self._lease)
            was = self._token
            self._token = revision if created or (revision and revision == was) else 0
            if self._token and not was:
                log.info("leading", extra={"key": self.key, "fencing_token": self._token})
        except EtcdUnavailable as e:
            log.warning("etcd unavailable: %s", e)

    def act(self, name: str, value: str, token: int | None = None) -> bool:
        """Record action ``name`` fenced by ``token`` (default: ours). False: refused (not the
        leader, a stale token, or no quorum)."""
        token = self.token if token is None else token
        if not token:
            return False
        try:
            return self.client.put_if_owner(self.key, token, f"{self.prefix}/actions/{name}", value)
        except EtcdUnavailable:
            return False

    def act_once(
        self, name: str, value: str, cooldown: tuple[str, float] | None = None, token: int | None = None
    ) -> tuple[bool, str]:
        """Record action ``name`` unless it ever was, fenced by ``token`` (default: ours); with
        ``cooldown = (group, seconds)`` also unless another action of ``group`` was recorded
        within ``seconds``. (recorded, why not: "standby", "stale", "done", "cooldown" or
        "unavailable")."""
        token = self.token if token is None else token
        if not token:
            return False, "standby"
        expiring = None
        if cooldown is not None and cooldown[1] > 0:
            expiring = (f"{self.prefix}/cooldown/{cooldown[0]}", max(1, round(cooldown[1])))
        try:
            done, why = self.client.put_once_if_owner(
                self.key, token, f"{self.prefix}/actions/{name}", value, expiring
            )
        except EtcdUnavailable:
            return False, "unavailable"
        return done, "cooldown" if why == "expiring" else why

    def recorded(self, name: str) -> str | None:
        """The value action ``name`` was recorded with; None when never, or etcd cannot say."""
        try:
            return self.client.get(f"{self.prefix}/actions/{name}")
        except EtcdUnavailable:
            return None

    def run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.ttl / 3)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="errorgate-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.ttl)
        if self._lease:
            try:
                self.client.revoke(self._lease)  # hand over at once instead of after the ttl
            except EtcdUnavailable:
                pass
