"""Proof that an OTLP export request is valid, from its protobuf bytes alone.

Per-item validation (``validate_request``) and decoding are a large share of the gateway's
GIL-held Python time. The native module ``errorgate_native`` (Rust, ``native/``) reads the
bytes once, without building Python objects and without the GIL, and proves the usual request
valid, so the gateway skips validation and decodes the request only if a stage or an exporter
reads it (``errorgate.service.gateway``, ``WireBatch``).

Contract of ``prove_valid(signal, data, limits) -> Proof | None``:

- When it returns a ``Proof``, then ``data`` decodes with upb (``signal.parse(data)``) to a
  request that has fields (``errorgate.otlp.decode.decode`` accepts it),
  ``validate_request(signal, request, limits, data)`` rejects nothing,
  ``Proof.items == count_items(request)``, and if ``Proof.canonical`` the request serializes
  back to exactly ``data``.
- ``None`` means "not proven", never "invalid": the caller decodes and runs
  ``validate_request`` as without this module. The checker declines whatever it does not fully
  model (unknown fields, newer OTLP fields, a singular field sent twice, two members of a oneof,
  malformed or truncated bytes, invalid UTF-8, nesting beyond its bound) and anything
  ``validate_request`` would reject. It is total on hostile input: bounds-checked reads, time
  linear in ``len(data)``, recursion bounded by a fixed message depth (64, below upb's 100).
- The checker is stricter than validation where that is simpler: the attribute limits apply to
  every attribute list (exemplars' and metric metadata too), and resource/scope attributes
  breaking a limit decline the request even when it holds no item.

``NATIVE`` says whether the native module is in use. ``ERRORGATE_NATIVE=0`` in the environment
(read at import) turns it off; without the module (no Rust toolchain at install) the fallback
returns None for every request, which keeps behaviour identical to validating everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from errorgate.otlp.native import native_function
from errorgate.receiver.config import ValidationConfig
from errorgate.signals import Signal

_SIGNAL_CODES = {Signal.TRACES: 0, Signal.LOGS: 1, Signal.METRICS: 2}


class Proof(NamedTuple):
    items: int  # spans, log records or metric data points (as count_items counts them)
    canonical: bool  # serializing the decoded request gives back exactly the received bytes


_NativeProve = Callable[[int, bytes, int, int, int], "tuple[int, bool] | None"]


_native: _NativeProve | None = native_function("prove")
NATIVE: bool = _native is not None


def prove_valid(signal: Signal, data: bytes, limits: ValidationConfig) -> Proof | None:
    """A Proof that ``data`` is a valid, non-empty ``signal`` export request, or None (not proven)."""
    if _native is None:
        return None
    found = _native(
        _SIGNAL_CODES[signal],
        data,
        limits.max_attribute_depth,
        limits.max_string_length,
        limits.max_attributes,
    )
    return None if found is None else Proof(*found)
