"""Cheap pre-checks that let ``classify`` skip attribute decoding for healthy spans.

Decoding a span's attributes into a dict costs microseconds per span (every KeyValue becomes a
Python object); serializing the span is done in C and far cheaper. An attribute key appears
verbatim in the serialized bytes, so when none of the keys a decision reads occurs there the
attributes cannot change the decision and are never decoded. A key's text inside some value is
only a false alarm: the caller then decodes the attributes and decides exactly as before.
``SpanBytes`` goes further — one detection key read in place, peer names confirmed against
the message, spans remembered by their bytes after the end time — each exact on its own terms
(see its methods); ``tests/test_classify_byte_checks.py`` builds the adversarial cases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.attributes import AttrValue, has, to_python
from errorgate.processors.classification.detect import detect_span
from errorgate.processors.classification.domain import db_system, peer_name

# Everything ``detect.detect_span`` reads from span attributes.
DETECT_KEYS = (
    "http.response.status_code",
    "http.status_code",
    "rpc.response.status_code",
    "rpc.status_code",
    "rpc.grpc.status_code",
    "error.type",
)
# Everything ``domain.peer_name`` and the database fallback read.
PEER_KEYS = (
    "peer.service",
    "server.address",
    "net.peer.name",
    "rpc.service",
    "messaging.destination.name",
    "db.system",  # also matches db.system.name
)


_PEER_SET = frozenset((*PEER_KEYS, "db.system.name"))
FINGERPRINT_KEY = "errorgate.error.fingerprint"
_FINGERPRINT_TEXT = FINGERPRINT_KEY.encode()


DETECT_SET = frozenset(DETECT_KEYS)
# Every detection key contains one of these texts once, so counting them (two C-level scans)
# bounds how many detection keys a span's bytes can hold.
DETECT_TEXTS = (b"status_code", b"error.type")
# One serialized attribute whose key is a detection key: ``\n`` key-length key ``\x12``
# value-length (single-byte lengths; longer values never take the fast path).
_DETECT_RECORD = re.compile(
    b"\n([\x00-\x7f])(" + b"|".join(re.escape(k.encode()) for k in DETECT_KEYS) + b")\x12([\x00-\x7f])"
)
# The peer-name keys in ``peer_name``'s order of precedence, each with the pattern of its
# serialized attribute holding a string value (``\x12`` AnyValue length, ``\n`` string length).
_PEER_NAME_RECORDS = tuple(
    (
        k.encode(),
        re.compile(b"\n" + bytes([len(k)]) + re.escape(k.encode()) + b"\x12([\x00-\x7f])\n([\x00-\x7f])"),
    )
    for k in PEER_KEYS[:5]
)
_CACHE_SIZE = 4096
_TAIL_SAMPLE = 4096  # tail lookups between two judgements of their hit rate
_TAIL_PAUSE = 100_000  # spans scanned without tail lookups after a poor hit rate
_END_TIME_TAG = bytes([Span.DESCRIPTOR.fields_by_name["end_time_unix_nano"].number << 3 | 1])  # fixed64


def decode_only(attrs: Iterable[KeyValue], keys: frozenset[str]) -> dict[str, AttrValue]:
    """``to_dict(attrs)`` restricted to ``keys`` (values of other keys are never decoded)."""
    found = {kv.key: kv.value for kv in attrs if kv.key in keys}
    return {key: to_python(value) for key, value in found.items()}


def peer_of(attrs: Iterable[KeyValue]) -> str:
    """``peer_name(attrs) or db_system(attrs)``, decoding only the attributes those read."""
    decoded = decode_only(attrs, _PEER_SET)
    return peer_name(decoded) or db_system(decoded)


class SpanBytes:
    """Decisions about a healthy-looking span read from its serialized bytes, exact or deferred.

    Decoding attributes creates a Python object per attribute (microseconds per span); these
    checks are C-level scans of bytes the caller already has, with small caches for the few
    distinct values that repeat. Whenever the bytes do not settle a question on their own the
    caller falls back to decoding, so the answers are always those of a full decode.
    """

    def __init__(self) -> None:
        self._healthy: dict[tuple[int, bytes, bytes], bool] = {}
        self._names: dict[tuple[bytes, bytes], tuple[KeyValue, str] | None] = {}
        # (kind, ``tail``) of healthy spans -> their peer name ("" unless a client/producer).
        self.healthy_tails: dict[tuple[int, bytes], str] = {}
        self.use_tails = True
        self._lookups = self._hits = self._paused = 0

    def surely_healthy(self, span: Span, data: bytes, status_at: int, type_at: int) -> bool:
        """True only when ``detect_span`` finds no error on a span whose status is neither OK nor
        ERROR and that has no ``exception`` event; False means "decode to find out".

        With a single detection key text in the bytes, the span has at most that one detection
        attribute. If the text is a real key, the pattern reads its real value (serialization is
        canonical: key, then the AnyValue); if it is inside some other value, the span has no
        detection attribute at all and is healthy anyway. So "healthy given the parsed value"
        implies healthy either way; a failing verdict is only a false alarm for the caller.

        ``status_at`` / ``type_at``: where ``data.find`` found the two texts (-1: absent)."""
        if status_at >= 0:
            if type_at >= 0 or data.find(DETECT_TEXTS[0], status_at + 1) >= 0:
                return False
            start = max(0, status_at - 16)  # the longest key holding it starts 14 bytes earlier
        elif type_at >= 0:
            if data.find(DETECT_TEXTS[1], type_at + 1) >= 0:
                return False
            start = max(0, type_at - 2)
        else:
            return False
        # Any match holds a detection key text; the only one is at ``start`` + at most 16.
        m = _DETECT_RECORD.search(data, start)
        if m is None or m[1][0] != len(m[2]):
            return False
        key = (span.kind, m[2], data[m.end() : m.end() + m[3][0]])
        found = self._healthy.get(key)
        if found is None:
            if len(self._healthy) >= _CACHE_SIZE:
                self._healthy.clear()
            found = self._healthy[key] = _healthy_with(span, key[1], key[2])
        return found

    @staticmethod
    def tail(data: bytes, end_time: int) -> bytes | None:
        """The bytes after the end time field of a serialized span (``end_time``: its non-zero
        ``end_time_unix_nano``), None when the field's bytes also occur elsewhere.

        Spans of one operation usually differ only in ids and times, and those precede the
        attributes. Serialization is canonical (fields in number order: ids, name, kind, start,
        end, then attributes, events, links, status, flags), so these bytes determine everything
        detection and the peer name read besides the kind: the key of ``healthy_tails``."""
        marker = _END_TIME_TAG + end_time.to_bytes(8, "little")
        at = data.find(marker)
        if at < 0:
            return None
        tail = data[at + 9 :]
        return None if tail.find(marker) >= 0 else tail

    def tally(self, spans: int, lookups: int, hits: int) -> None:
        """Account one scan's use of ``healthy_tails``. Where spans rarely repeat (attributes
        with ids, values), the lookups only cost: below a 20 % hit rate they pause for a while,
        then are tried again. (Whether the cache is used never changes a decision.)"""
        if not self.use_tails:
            self._paused -= spans
            self.use_tails = self._paused <= 0
            return
        self._lookups += lookups
        self._hits += hits
        if self._lookups >= _TAIL_SAMPLE:
            if self._hits * 5 < self._lookups:
                self.use_tails = False
                self._paused = _TAIL_PAUSE
            self._lookups = self._hits = 0

    def remember_healthy(self, kind: int, tail: bytes, peer: str) -> None:
        if len(self.healthy_tails) >= _CACHE_SIZE:
            self.healthy_tails.clear()
        self.healthy_tails[(kind, tail)] = peer

    def peer(self, span: Span, data: bytes) -> str:
        """``peer_name(attrs) or db_system(attrs)`` of ``span`` (``data``: its serialized bytes).

        Fast when the first peer-name key present occurs once with a string value that is a
        name: the real attribute is confirmed by comparing messages (a key's text inside some
        other value is then no match), and no key of higher precedence can exist, its text
        being absent. Anything else decodes the peer attributes."""
        for candidate in _PEER_NAME_RECORDS:
            if data.find(candidate[0]) >= 0:
                key, record = candidate
                break
        else:
            return peer_of(span.attributes) if data.find(b"db.system") >= 0 else ""
        if data.count(key) == 1:
            m = record.search(data)
            if m is not None and m[1][0] == m[2][0] + 2:
                found = self._name(key, data[m.end() : m.end() + m[2][0]])
                if found is not None and found[0] in span.attributes:
                    return found[1]
        return peer_of(span.attributes)

    def _name(self, key: bytes, raw: bytes) -> tuple[KeyValue, str] | None:
        """(the attribute a real match equals, the peer name), None when not a usable name."""
        cache_key = (key, raw)
        if cache_key in self._names:
            return self._names[cache_key]
        if len(self._names) >= _CACHE_SIZE:
            self._names.clear()
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            name = ""
        found = None
        if name and peer_name({key.decode(): name}):
            found = (KeyValue(key=key.decode(), value=AnyValue(string_value=name)), name)
        self._names[cache_key] = found
        return found


def _healthy_with(span: Span, key: bytes, raw_value: bytes) -> bool:
    """Whether ``span`` (status neither OK nor ERROR, no exception event) is healthy when its
    one detection attribute ``key`` holds the serialized AnyValue ``raw_value``."""
    try:
        value = AnyValue.FromString(raw_value)
    except DecodeError:
        return False
    return detect_span(span, {key.decode(): to_python(value)}) is None


def fingerprinted_traces(
    request: ExportTraceServiceRequest, data: bytes, known: frozenset[bytes]
) -> frozenset[bytes]:
    """Ids of the traces outside ``known`` with a span carrying a fingerprint attribute (one set
    upstream). ``data``: the request serialized before classify tagged it, or after, when every
    span it tagged belongs to a ``known`` trace. A key is in the bytes as text, so without the
    text (one C-level scan: the usual case) no span carries one; otherwise each span outside
    ``known`` is checked, its bytes first."""
    if data.find(_FINGERPRINT_TEXT) < 0:
        return frozenset()
    found: set[bytes] = set()
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                tid = span.trace_id
                if (
                    tid not in known
                    and tid not in found
                    and span.SerializeToString().find(_FINGERPRINT_TEXT) >= 0
                    and has(span.attributes, FINGERPRINT_KEY)
                ):
                    found.add(tid)
    return frozenset(found)


def service_of(resource_attrs: Mapping[str, AttrValue]) -> tuple[str, str]:
    return str(resource_attrs.get("service.name") or "unknown_service"), str(
        resource_attrs.get("service.version") or ""
    )


def seconds(*nanos: int, fallback: float) -> float:
    return next((n / 1e9 for n in nanos if n), fallback)


def resends(attrs: Mapping[str, AttrValue], keys: Iterable[str]) -> int:
    """The retry count an item carries under the first of ``keys`` present (0 if none)."""
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return 0


def baggage_entries(*sources: Mapping[str, AttrValue]) -> dict[str, str]:
    """W3C baggage entries from captured ``baggage`` headers in the attribute maps, first wins."""
    headers: list[str] = []
    for source in sources:
        for key in ("baggage", "http.request.header.baggage"):
            value = source.get(key)
            if isinstance(value, str):
                headers.append(value)
            elif isinstance(value, list):
                headers.extend(str(v) for v in value)
    entries: dict[str, str] = {}
    for header in headers:
        for member in header.split(","):
            name, sep, value = member.split(";", 1)[0].partition("=")
            if sep and name.strip():
                entries.setdefault(unquote(name.strip()), unquote(value.strip()))
    return entries
