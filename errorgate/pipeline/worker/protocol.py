"""What crosses the pipe between the gateway and its processor worker: the worker's settings,
the message encoding, and the failure the gateway raises for a batch the worker could not
process. Both ends import this; neither imports the other's module for it."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Notes that cross the pipe (facts about the batch; anything else is process-local).
NOTE_TYPES = (bool, int, float, str, bytes, frozenset)

Key = tuple[str, int]  # (component id, occurrence): as the gateway keys processor instances


@dataclass(frozen=True)
class WorkerSettings:
    # repr=False on what may hold key material (an env var, a key file's path): never logged.
    data_dir: Path
    label_caps: dict[str, int]
    log_level: str
    log_encoding: str
    components: dict[Key, Any] = field(repr=False)  # key -> the component's validated config
    timeout: float
    # The enabled extensions' validated configs by id: the worker builds its own (the same keyring).
    extensions: dict[str, Any] = field(default_factory=dict, repr=False)
    # The gateway's environment now (keys may come from it); the worker process is forked from
    # a server started earlier, whose environment may be older.
    environ: dict[str, str] = field(default_factory=dict, repr=False)
    # The top-level ``ha:`` settings (``errorgate.config.HaConfig``) for singleton roles; None: alone.
    ha: Any = None


class WorkerFailed(Exception):
    """A batch the worker could not process. Carries no telemetry content (type and place only)."""

    def __init__(self, component_id: str, error_type: str, where: str = "") -> None:
        super().__init__(f"{error_type} in processor {component_id}")
        self.component_id = component_id
        self.error_type = error_type
        self.where = where


def pack(message: object) -> bytes:
    """A message for the pipe. Plain pickle: ``Connection.send`` builds a ForkingPickler for
    every message, which costs more than pickling one (what crosses holds no file descriptors)."""
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
