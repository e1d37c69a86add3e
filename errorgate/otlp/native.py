"""The optional native module ``errorgate_native`` (Rust, ``native/``): its functions, or None
where it is not installed, was built before it had the function, or ``ERRORGATE_NATIVE=0`` is
set in the environment (read when the caller loads it, at its import). Every caller keeps a
pure-Python path with the same results."""

from __future__ import annotations

import importlib
import os
from typing import Any


def native_function(name: str) -> Any | None:
    """``errorgate_native.<name>``, or None (the caller takes its pure-Python path)."""
    if os.environ.get("ERRORGATE_NATIVE", "1") == "0":
        return None
    try:
        module = importlib.import_module("errorgate_native")
    except ImportError:
        return None
    return module.__dict__.get(name)
