"""Disk pressure: the free space of every directory errorgate writes acknowledged data to.

Data is acknowledged only once it is on disk, so a full disk must show before a write fails:
below ``service.disk.min_free_mib`` the gateway refuses new data (the client retries, nothing
is lost) and reports not ready, while what it already accepted still has room to be queued,
held and dead-lettered. Free space is read with one ``statvfs`` per directory at most every
``check_interval``, so the check costs nothing measurable per request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from errorgate.telemetry import Telemetry

log = logging.getLogger("errorgate.disk")
_MIB = 1048576


class DiskGuard:
    """``low()`` names the first directory below the floor (``None`` when all have room)."""

    def __init__(
        self,
        directories: Mapping[str, Path],
        min_free_mib: float,
        check_interval: float,
        telemetry: Telemetry,
        free_bytes: Callable[[Path], int] | None = None,
        reclaim: Callable[[], None] | None = None,
    ) -> None:
        self.directories = dict(directories)  # role (e.g. "data_dir", "queue:otlp") -> directory
        self.min_free = int(min_free_mib * _MIB)
        self.check_interval = check_interval
        self._telemetry = telemetry
        self._free_bytes = free_bytes or statvfs_free
        # Called once when a directory is found below the floor, before refusing anything: what
        # may give its space up for live data (the dead-letter store) does so first.
        self._reclaim = reclaim
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._low: tuple[str, int] | None = None

    def low(self) -> tuple[str, int] | None:
        """(role, free bytes) of a directory below the floor, re-read when the last read is stale."""
        if self.min_free <= 0:
            return None
        now = time.monotonic()
        if now - self._checked_at < self.check_interval:
            return self._low
        with self._lock:
            if now - self._checked_at >= self.check_interval:
                self._low = self._measure_after_reclaim()
                self._checked_at = now
        return self._low

    def message(self, low: tuple[str, int]) -> str:
        role, free = low
        return (
            f"disk nearly full: {role} has {free / _MIB:.1f} MiB free, below "
            f"service.disk.min_free_mib ({self.min_free / _MIB:g} MiB)"
        )

    def _measure_after_reclaim(self) -> tuple[str, int] | None:
        if self._reclaim is not None and self._find_low() is not None:
            self._reclaim()
        return self._measure()

    def _find_low(self) -> tuple[str, int] | None:
        for role, directory in self.directories.items():
            try:
                free = self._free_bytes(directory)
            except OSError:
                continue
            if free < self.min_free:
                return role, free
        return None

    def _measure(self) -> tuple[str, int] | None:
        low: tuple[str, int] | None = None
        for role, directory in self.directories.items():
            try:
                free = self._free_bytes(directory)
            except OSError as e:
                log.warning("cannot read free space of %s (%s)", role, type(e).__name__)
                continue
            self._telemetry.disk_free.labels(role).set(free)
            if free < self.min_free and low is None:
                low = (role, free)
        was_low = self._low is not None
        if low is not None and not was_low:
            log.warning("%s; refusing new data until space returns", self.message(low))
        elif low is None and was_low:
            log.warning("disk space is back above service.disk.min_free_mib; accepting data again")
        self._telemetry.disk_pressure.set(1 if low is not None else 0)
        return low


def statvfs_free(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize
