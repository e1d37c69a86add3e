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

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from errorgate.attributes import AttrValue, set_value, to_any

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
