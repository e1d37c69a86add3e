"""Claims of singleton actions, written before the action is taken: at most once.

- ``LocalLedger`` (no ``ha:`` section): in this process; one errorgate instance only;
- ``FencedLedger`` (``ha:``): an etcd transaction (``Election.act_once``) that commits only
  while this instance leads with its fencing token and no instance ever recorded that claim
  (and, with a cooldown, no claim of its group within the cooldown: a key under a lease of that
  ttl). Standbys, a deposed leader and an instance cut off from etcd's quorum claim nothing.

Used by the rollback trigger and the incident engine (pages, silences): the claim comes first,
so a call that fails after it is not repeated by another instance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from errorgate.ha.election import Election


class Ledger(Protocol):
    def claim(self, name: str, value: str, cooldown: tuple[str, float] | None = None) -> tuple[bool, str]:
        """(claimed, why not: "done", "cooldown", "standby", "stale", "unavailable")."""
        ...

    def recorded(self, name: str) -> str | None:
        """The value claim ``name`` was recorded with (None: never, or not readable now)."""
        ...


class LocalLedger:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._claimed: dict[str, str] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, name: str, value: str, cooldown: tuple[str, float] | None = None) -> tuple[bool, str]:
        with self._lock:
            if name in self._claimed:
                return False, "done"
            if cooldown is not None:
                last = self._last.get(cooldown[0])
                if last is not None and self.clock() - last < cooldown[1]:
                    return False, "cooldown"
                self._last[cooldown[0]] = self.clock()
            self._claimed[name] = value
            return True, ""

    def recorded(self, name: str) -> str | None:
        with self._lock:
            return self._claimed.get(name)


class FencedLedger:
    """The claim as a fenced etcd transaction (``Election.act_once``)."""

    def __init__(self, election: Election) -> None:
        self.election = election

    def claim(self, name: str, value: str, cooldown: tuple[str, float] | None = None) -> tuple[bool, str]:
        return self.election.act_once(name, value, cooldown=cooldown)

    def recorded(self, name: str) -> str | None:
        return self.election.recorded(name)
