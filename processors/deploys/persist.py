"""The per-version state on disk, so a restarted worker goes on with a running canary.

A deploy verdict needs each version's last ``verdict.window`` of slots; kept only in memory, a
restart (a crash, a config reload, a new errorgate release) in the middle of a canary would
start both versions from zero and leave Argo or Flagger reading ``inconclusive`` for another
window. The state is small (counts, latency sketches, error fingerprints per version and slot;
no telemetry values), so one JSON file in the component's state directory, written whole
(temporary file, then rename) every ``deploys.persist_interval`` and at shutdown, is enough: a
crash loses at most that interval.

Why a file and not the shared-state Redis: behind a trace-id load balancer each replica keeps
its own share of every version's requests, so replicas would overwrite one another's copy
under one key; what each replica restores is its own share, which is what it had.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from errorgate.processors.deploys.store import VersionStore

FILE_NAME = "deploys.json"


def load(store: VersionStore, path: Path, log: logging.Logger) -> bool:
    """Restore ``store`` from ``path`` if it holds a saved state; a file that cannot be read
    is reported (naming it) and the store starts empty: lost history is not worth a failed start."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False
    except OSError as e:
        log.warning("deploy state %s not read (%s): per-version windows start empty", path, e.strerror)
        return False
    try:
        store.restore(json.loads(raw))
    except (ValueError, KeyError, TypeError) as e:
        log.warning("deploy state %s is not a saved state (%s): per-version windows start empty", path, e)
        return False
    return True


def save(store: VersionStore, path: Path) -> None:
    """Write the state whole, owner-only: a reader (or a crash mid-write) never sees half a file."""
    data = json.dumps(store.snapshot(), separators=(",", ":")).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".deploys-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
