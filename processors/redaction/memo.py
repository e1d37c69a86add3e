"""Whole items already found to hold nothing to redact, by content.

The value cache spares re-analysing a value, but the walker still visits every attribute of
every item in Python (a wrapper object and a string per attribute). Items repeat whole more
often than one would think (the same DB call, the same log line with the same attributes, in
another trace at another time), so an item's *content* (its serialized bytes minus the ids and
timestamps, which the walker never scans) is remembered once a walk found no slot in it; an
item with remembered content gets no slot without a walk.

Exact by construction: equal bytes are equal content, every field the walker scans is part of
the bytes, and "no slot" only depends on content (key policy and the clean set are fixed per
processor; the clean set only ever holds values analysed and found clean).

Signatures are also cut natively out of the request's bytes (``signatures``, errorgate_native):
each item's own bytes minus the records of exactly the fields blanked here. As sound, because
decoding is a function of the bytes and each removed record only sets the field it names (no
top-level oneof in Span or LogRecord): equal stripped bytes decode to equal items minus ids and
times, whether they are the received bytes or a serialization, so a native signature can equal
a Python one only for equal content. The bytes must be the request's *current* content: the
pipeline hands ``WIRE_NOTE`` only when the received body is the canonical serialization and
only until a processor changes the request (stale bytes would hit the memo for content no
longer there: a replay wiping attributes, or a clean hit letting new PII through), otherwise
the request is serialized afresh. A record of a blanked field with another wire type (an
unknown field to upb), a group, and spans with events or links (whose ids and times
``_span_copy_signature`` blanks too) get the Python signature. The functions here stay the
reference: on canonical bytes the native signature is byte for byte theirs.

Computing a signature costs ~1-2 µs (blanking and a serialization, in C) against ~3-8 µs for
a walk, so the memo pays from a ~30 % hit rate on. On traffic where items rarely repeat whole it
pauses itself: a window with fewer hits than ``MIN_HIT_RATE`` stops it for ``PAUSE_ITEMS`` items
(the first window after a start or a pause only fills the memo).

Items that *did* need redacting repeat too (the same server span with the same client address,
the same log line with the same e-mail): ``RedactedItems`` remembers, per signature, the item's
content after redaction and what was found, and the next item with that signature gets that
content (its own ids and times put back) without a walk, a cache lookup or a rewrite. Exact
under the same argument, as long as the rewrite depends only on the values: so only where no
action is keyed (``hash``/``token`` follow the keyring's current key, ``encrypt`` draws a nonce
and binds service and tenant); items whose analysis failed are never remembered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.caches import DICT_BYTES_KEY, MIB, ByteFifoMap, ByteFifoSet

WINDOW = 2048  # lookups per hit-rate check
MIN_HIT_RATE = 0.3
PAUSE_ITEMS = 20_000
# A signature is a whole span or log record (ids aside): a few hundred bytes usually, but as
# large as the item. 16,384 typical ones take about 6 MiB; this budget keeps giant items from
# making the memo gigabytes.
MAX_BYTES = 8 * MIB


def span_signature(span: Span) -> bytes:
    """The span's bytes with ids and times blanked. Most spans have no events or links: their
    fields are blanked in place and restored (a copy costs twice as much)."""
    if len(span.events) or len(span.links):
        return _span_copy_signature(span)
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    try:
        span.trace_id = span.span_id = span.parent_span_id = b""
        span.start_time_unix_nano = span.end_time_unix_nano = 0
        return span.SerializeToString()
    finally:
        span.trace_id, span.span_id, span.parent_span_id = trace_id, span_id, parent
        span.start_time_unix_nano, span.end_time_unix_nano = start, end


def _span_copy_signature(span: Span) -> bytes:
    copy = Span()
    copy.CopyFrom(span)
    copy.trace_id = copy.span_id = copy.parent_span_id = b""
    copy.start_time_unix_nano = copy.end_time_unix_nano = 0
    for event in copy.events:
        event.time_unix_nano = 0
    for link in copy.links:
        link.trace_id = link.span_id = b""
    return copy.SerializeToString()


def log_signature(record: LogRecord) -> bytes:
    """The record's bytes with ids and times blanked (in place, then restored)."""
    trace_id, span_id = record.trace_id, record.span_id
    time, observed = record.time_unix_nano, record.observed_time_unix_nano
    try:
        record.trace_id = record.span_id = b""
        record.time_unix_nano = record.observed_time_unix_nano = 0
        return record.SerializeToString()
    finally:
        record.trace_id, record.span_id = trace_id, span_id
        record.time_unix_nano, record.observed_time_unix_nano = time, observed


@dataclass(frozen=True, slots=True)
class Redacted:
    """An item's own redaction, remembered by its signature before redaction."""

    content: bytes  # the item's signature after redaction (before the audit attributes)
    found: tuple[tuple[str, str], ...]  # (entity type, rule) per value redacted
    dropped: bool  # an attribute was marked for removal (``sweep_dropped``)


# + the Redacted, its bytes header and its found tuple; 72 a finding: its (entity, rule) tuple
# and the slot for it (the strings are the recognizers' own, shared)
_REDACTED_ENTRY = DICT_BYTES_KEY + 200


def _redacted_cost(signature: bytes, redacted: Redacted) -> int:
    return len(signature) + len(redacted.content) + 72 * len(redacted.found) + _REDACTED_ENTRY


class RedactedItems:
    """Signatures of items that had something redacted -> ``Redacted``; bounded by entries and
    bytes, oldest out first. Lookups are lock-free dict reads."""

    def __init__(self, max_entries: int, max_bytes: int = MAX_BYTES) -> None:
        self._items: ByteFifoMap[bytes, Redacted] = ByteFifoMap(max_entries, max_bytes, _redacted_cost)
        self.get = self._items.get
        self.put = self._items.put

    @property
    def bytes(self) -> int:
        return self._items.bytes

    def __len__(self) -> int:
        return len(self._items)


def signature(message: Any, kind: str) -> bytes:
    """``span_signature`` or ``log_signature`` by owner kind."""
    return span_signature(message) if kind == "span" else log_signature(message)


def replay(message: Any, kind: str, content: bytes) -> None:
    """Give ``message`` the remembered content, keeping its own ids and times (what the
    signature leaves out)."""
    if kind == "span":
        span: Span = message
        trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
        start, end = span.start_time_unix_nano, span.end_time_unix_nano
        span.Clear()
        span.MergeFromString(content)
        span.trace_id, span.span_id, span.parent_span_id = trace_id, span_id, parent
        span.start_time_unix_nano, span.end_time_unix_nano = start, end
    else:
        record: LogRecord = message
        trace_id, span_id = record.trace_id, record.span_id
        time, observed = record.time_unix_nano, record.observed_time_unix_nano
        record.Clear()
        record.MergeFromString(content)
        record.trace_id, record.span_id = trace_id, span_id
        record.time_unix_nano, record.observed_time_unix_nano = time, observed


class CleanItems:
    """Signatures of items without slots, bounded by entries and bytes (oldest out first); with a
    self-pausing hit-rate check.

    Shared by concurrent ``process`` calls: lookups are atomic dict operations, additions are
    locked (``ByteFifoSet``), and a lost counter update only shifts when the next check happens."""

    def __init__(self, max_entries: int, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self._seen: ByteFifoSet[bytes] = ByteFifoSet(max_entries, max_bytes, DICT_BYTES_KEY)
        self._contains = self._seen.contains  # the dict's own method: no Python frame per lookup
        self._lookups = 0
        self._hits = 0
        self._paused = 0  # items left to pass without signatures
        self._learning = True  # the first window after a start or a pause never pauses

    def active(self) -> bool:
        return self.max_entries > 0 and self._paused <= 0

    def skip(self, items: int) -> None:
        """``items`` passed while paused."""
        self._paused -= items
        if self._paused <= 0:
            self._learning = True

    def hit(self, signature: bytes) -> bool:
        self._lookups += 1
        found = self._contains(signature)
        if found:
            self._hits += 1
        if self._lookups >= WINDOW:
            if not self._learning and self._hits < MIN_HIT_RATE * self._lookups:
                self._paused = PAUSE_ITEMS
            self._learning = False
            self._lookups = self._hits = 0
        return found

    def add(self, signature: bytes) -> None:
        self._seen.add(signature)

    def count_hit(self) -> None:
        """The last ``hit`` missed here but the item was found in ``RedactedItems``: a walk spared
        all the same, so it counts for the hit rate."""
        self._hits += 1

    @property
    def bytes(self) -> int:
        return self._seen.bytes

    def __len__(self) -> int:
        return len(self._seen)
