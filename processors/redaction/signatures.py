"""Item memo signatures of a whole batch at once, from the request's bytes (native), with the
per-item Python signatures of ``memo`` as the fallback and the reference.

In the processor worker ``memo.span_signature`` (blank the ids and times, serialize, restore,
per span) was a quarter of redact's GIL-held time. The native module ``errorgate_native``
(``native/src/signatures.rs``) instead walks the request's bytes once, without the GIL, and
cuts each span's or log record's own bytes out, leaving out the records of the fields the
Python signature blanks. Why that is as exact as the Python signature: ``memo``'s docstring.

Contract of ``batch_signatures(batch, wire)``: a list with one entry per span or log record of
``batch.request`` in iteration order (resource, scope, item), each the item's signature or None
(the caller computes ``memo.signature`` for it: spans with events or links); or None for the
whole batch (metrics, no native module, bytes that do not frame as a request, or an item count
that differs from the request's: then every signature is computed in Python). ``wire`` must be
the request's *current* bytes (``WIRE_NOTE`` as the pipeline hands it, void once any processor
changed the request); without it the request is serialized here (C, a fraction of the per-item
Python cost).

``NATIVE`` says whether the native module is in use; ``ERRORGATE_NATIVE=0`` (read at import)
turns it off, as for ``errorgate.intake.proof``.
"""

from __future__ import annotations

from collections.abc import Callable

from errorgate.otlp.native import native_function
from errorgate.signals import Batch, Signal, count_items

_SIGNAL_CODES = {Signal.TRACES: 0, Signal.LOGS: 1}

_NativeSignatures = Callable[[int, bytes], "list[bytes | None] | None"]


_native: _NativeSignatures | None = native_function("item_signatures")
NATIVE: bool = _native is not None


def batch_signatures(batch: Batch, wire: bytes | None) -> list[bytes | None] | None:
    """Every span's or log record's signature (None where Python computes it), or None."""
    code = _SIGNAL_CODES.get(batch.signal)
    if _native is None or code is None:
        return None
    request = batch.request
    found = _native(code, wire if wire is not None else request.SerializeToString())
    # Bytes of another request would misalign every signature: the count is the cheap check
    # that catches what a caller could get wrong (the content itself is the caller's promise).
    if found is None or len(found) != count_items(request):
        return None
    return found
