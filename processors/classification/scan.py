"""Cheap pre-checks that let ``classify`` skip attribute decoding for healthy spans.

Decoding a span's attributes into a dict costs microseconds per span (every KeyValue becomes a
Python object); serializing the span is done in C and far cheaper. An attribute key appears
verbatim in the serialized bytes, so when none of the keys a decision reads occurs there the
attributes cannot change the decision and are never decoded. A key's text inside some value is
only a false alarm: the caller then decodes the attributes and decides exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableSequence
from urllib.parse import unquote

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from errorgate.attributes import AttrValue, set_value, to_any, to_python
from errorgate.processors.classification.detect import SEVERITY_ERROR
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


def any_key(keys: Iterable[str]) -> re.Pattern[bytes]:
    """One C-level search for any of ``keys`` in serialized bytes."""
    return re.compile(b"|".join(re.escape(k.encode()) for k in keys))


DETECT = any_key(DETECT_KEYS)
PEER = any_key(PEER_KEYS)
_PEER_SET = frozenset((*PEER_KEYS, "db.system.name"))


DETECT_SET = frozenset(DETECT_KEYS)


def decode_only(attrs: Iterable[KeyValue], keys: frozenset[str]) -> dict[str, AttrValue]:
    """``to_dict(attrs)`` restricted to ``keys`` (values of other keys are never decoded)."""
    found = {kv.key: kv.value for kv in attrs if kv.key in keys}
    return {key: to_python(value) for key, value in found.items()}


def peer_of(attrs: Iterable[KeyValue]) -> str:
    """``peer_name(attrs) or db_system(attrs)``, decoding only the attributes those read."""
    decoded = decode_only(attrs, _PEER_SET)
    return peer_name(decoded) or db_system(decoded)


def set_many(
    target: MutableSequence[KeyValue], present: Mapping[str, object], tags: list[tuple[str, AttrValue]]
) -> None:
    """``set_value`` for each tag, in order, with one append for the keys not yet in ``present``
    (the decoded attributes of ``target``), so new keys cost no scan of the list."""
    new = []
    for key, value in tags:
        if key in present:
            set_value(target, key, value)
        else:
            new.append(KeyValue(key=key, value=to_any(value)))
    if new:
        target.extend(new)


def service_of(resource_attrs: Mapping[str, AttrValue]) -> tuple[str, str]:
    return str(resource_attrs.get("service.name") or "unknown_service"), str(
        resource_attrs.get("service.version") or ""
    )


def seconds(*nanos: int, fallback: float) -> float:
    return next((n / 1e9 for n in nanos if n), fallback)


def maybe_failing(record: LogRecord) -> bool:
    """False only when ``detect_log`` would surely find nothing (checked without decoding attributes)."""
    severity = record.severity_number
    if severity >= SEVERITY_ERROR or severity == 0:
        return True
    return b"exception." in record.SerializeToString()


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
