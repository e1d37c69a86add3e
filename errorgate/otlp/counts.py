"""How many resource entries, scope entries and items an export request holds, told before it
is decoded (from the protobuf bytes) or converted (from the parsed OTLP/JSON document).

Decoding costs per object, not per byte: an empty log record or resource entry is 2 bytes on
the wire and a hundred or more once decoded, so the receivers ask here first and refuse a
request over its limits before decoding anything.

The protobuf count has to stay cheap next to decoding on ordinary requests and bounded on
hostile ones:

- An entry takes at least 2 bytes, so a part of n bytes holds at most n/2 of them: most
  requests are proven within every cap by their size alone, with no reading at all.
- Resource and scope entries are counted by a small varint reader over the top two levels
  (a few fields per entry: a usual request has a handful), which stops as soon as it has seen
  more fields than the cap allows, so a flood of millions of empty entries costs the reader
  only the cap's worth of steps.
- Items are counted by a C-speed parse of the outline (``flat.outline_deep_class``: items kept
  as undecoded bytes), about 30 µs for a request of 1000 spans (decoding it: about 450 µs);
  metric data points by a small outline of their own, read per metric.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

from errorgate.otlp.flat import outline_deep_class
from errorgate.signals import Signal

RESOURCES = "resources"
SCOPES = "scopes"
ITEMS = "items"

_LEN = 2  # wire type of length-delimited fields
_MIN_ENTRY = 2  # bytes an entry takes at least: a tag and a zero length
_MAX_VARINT = 10


class Caps(NamedTuple):
    resources: int
    scopes: int
    items: int


class Over(NamedTuple):
    """The first cap a request breaks: which (``RESOURCES``, ``SCOPES``, ``ITEMS``) and a count
    above the cap (counting stops early, so it is a lower bound of the real count)."""

    what: str
    seen: int


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (decoding would fail too)."""


# ---------------------------------------------------------------- protobuf


def over_cap(signal: Signal, data: bytes, caps: Caps) -> Over | None:
    """The first of ``caps`` the serialized request ``data`` breaks, or None.

    Raises ``WireError`` when the walked levels are not well-formed protobuf; everything the
    reader rejects, decoding rejects too (it reads the same levels with the same rules)."""
    if len(data) // _MIN_ENTRY <= min(caps):
        return None  # too small to hold more entries than any cap
    resources: list[tuple[int, int]] = []
    seen = _walk(data, 0, len(data), 1, caps.resources, resources)
    if seen > caps.resources:
        return Over(RESOURCES, seen)
    if sum(end - start for start, end in resources) // _MIN_ENTRY <= min(caps.scopes, caps.items):
        return None
    scopes: list[tuple[int, int]] = []
    # A resource entry holds its resource and schema_url besides scope entries: room for both.
    budget = caps.scopes + 2 * len(resources)
    seen = 0
    for start, end in resources:
        seen += _walk(data, start, end, 2, budget - seen, scopes)
        if len(scopes) > caps.scopes or seen > budget:
            return Over(SCOPES, max(len(scopes), caps.scopes + 1))
    if sum(end - start for start, end in scopes) // _MIN_ENTRY <= caps.items:
        return None
    items = _count_items(signal, data, caps.items)
    return Over(ITEMS, items) if items > caps.items else None


def _walk(data: bytes, start: int, end: int, wanted: int, budget: int, out: list[tuple[int, int]]) -> int:
    """Append the (start, end) of every length-delimited field numbered ``wanted`` in
    ``data[start:end]`` to ``out``; the number of fields read (all numbers, groups' contents
    included), stopping once it passes ``budget``."""
    pos = start
    seen = 0
    groups: list[int] = []  # field numbers of the groups being skipped (unknown fields)
    while pos < end:
        seen += 1
        if seen > budget:
            return seen
        tag = data[pos]
        if tag < 0x80:  # one-byte tags (fields 1-15) inline: this loop is the reader's whole cost
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        wire = tag & 7
        if wire == _LEN:
            if pos >= end:
                raise WireError("message truncated")
            length = data[pos]
            pos += 1
            if length >= 0x80:  # inline too: entries of 128 bytes and more have 2-4 byte lengths
                length &= 0x7F
                shift = 7
                while True:
                    if pos >= end or shift >= 64:
                        raise WireError(f"truncated or overlong varint at byte {pos}")
                    byte = data[pos]
                    pos += 1
                    length |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
            if length > end - pos:
                raise WireError(f"length-delimited field overruns its message at byte {pos}")
            if tag >> 3 == wanted and not groups:
                out.append((pos, pos + length))
            pos += length
        elif wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
        elif wire == 3:
            groups.append(tag >> 3)
        elif wire == 4 and groups and groups[-1] == tag >> 3:
            groups.pop()
        else:
            raise WireError(f"invalid wire type {wire} at byte {pos}")
        if tag < 8:
            raise WireError(f"field number 0 at byte {pos}")
    if pos != end or groups:
        raise WireError("message truncated")
    return seen


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for i in range(pos, min(pos + _MAX_VARINT, end)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise WireError(f"truncated or overlong varint at byte {pos}")


def _count_items(signal: Signal, data: bytes, cap: int) -> int:
    """Items in the request (data points for metrics), or a number above ``cap``."""
    outline = (_metrics_outline() if signal is Signal.METRICS else outline_deep_class())()
    try:
        outline.ParseFromString(data)
    except DecodeError:
        raise WireError("the request's outline does not parse") from None
    scopes = [scope.items for entry in outline.resources for scope in entry.scopes]  # type: ignore[attr-defined]
    entries = sum(map(len, scopes))
    if signal is not Signal.METRICS or entries > cap:
        # A metric entry costs its decoding like an item, with or without data points.
        return entries
    total = 0
    for metrics in scopes:
        for metric in metrics:
            # One data kind is set in a valid metric; more are all decoded (the last one kept), so
            # count all; a metric without data points counts once, as its entry is decoded too.
            total += max(sum(len(kind.points) for _, kind in metric.ListFields()), 1)
        if total > cap:
            break
    return total


@functools.cache
def _metrics_outline() -> type[Message]:
    """The outline of a metrics request down to data points (kept as undecoded bytes)."""
    fdp = descriptor_pb2.FieldDescriptorProto
    package = "errorgate.outline.metrics"
    proto = descriptor_pb2.FileDescriptorProto(
        name="errorgate/outline_metrics.proto", package=package, syntax="proto2"
    )

    def message(name: str, *fields: tuple[str, int, str | None, bool]) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, type_name, repeated in fields:
            label = fdp.LABEL_REPEATED if repeated else fdp.LABEL_OPTIONAL
            f = msg.field.add(name=field_name, number=number, label=label)
            if type_name is None:
                f.type = fdp.TYPE_BYTES
            else:
                f.type, f.type_name = fdp.TYPE_MESSAGE, f".{package}.{type_name}"

    # Gauge, Sum, Histogram, ExponentialHistogram and Summary keep data_points in field 1.
    message("Points", ("points", 1, None, True))
    message(
        "Metric",
        ("gauge", 5, "Points", False),
        ("sum", 7, "Points", False),
        ("histogram", 9, "Points", False),
        ("exponential_histogram", 10, "Points", False),
        ("summary", 11, "Points", False),
    )
    message("Scope", ("items", 2, "Metric", True))
    message("Resource", ("scopes", 2, "Scope", True))
    message("Request", ("resources", 1, "Resource", True))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Request"))


# ---------------------------------------------------------------- OTLP/JSON


def over_cap_json(signal: Signal, doc: dict[str, Any], caps: Caps) -> Over | None:
    """``over_cap`` for a parsed OTLP/JSON request (before its conversion to protobuf). Parts
    of the wrong JSON type are not counted: the conversion refuses them."""
    levels = _json_levels(signal)
    resources = _entries(doc, levels.resources)
    if len(resources) > caps.resources:
        return Over(RESOURCES, len(resources))
    scopes = [scope for entry in resources for scope in _entries(entry, levels.scopes)]
    if len(scopes) > caps.scopes:
        return Over(SCOPES, len(scopes))
    total = 0
    for scope in scopes:
        items = _entries(scope, levels.items)
        total += len(items)
        if levels.points is not None and total <= caps.items:
            total += _json_points(items, levels) - len(items)
        if total > caps.items:
            return Over(ITEMS, total)
    return None


def _json_points(metrics: list[Any], levels: _JsonLevels) -> int:
    """Data points of ``metrics`` (each kind present counted, as with protobuf); a metric counts
    at least once, as its entry costs a conversion too."""
    total = 0
    for metric in metrics:
        points = 0
        if isinstance(metric, dict):
            for key in levels.kinds:
                points += len(_entries(metric.get(key), levels.points or ()))
        total += max(points, 1)
    return total


class _JsonLevels(NamedTuple):
    resources: tuple[str, ...]  # the keys (JSON and proto names) of each level's list
    scopes: tuple[str, ...]
    items: tuple[str, ...]
    kinds: tuple[str, ...]  # metrics: the keys of the data kinds (every spelling)
    points: tuple[str, ...] | None  # metrics: the data points' keys within a kind


def _child(descriptor: Descriptor | None, number: int) -> Descriptor:
    """The message type of field ``number`` of ``descriptor``."""
    assert descriptor is not None
    child = descriptor.fields_by_number[number].message_type
    assert child is not None
    return child


def _keys(descriptor: Descriptor, number: int) -> tuple[str, ...]:
    field = descriptor.fields_by_number[number]
    return tuple(dict.fromkeys((field.json_name, field.name)))


@functools.cache
def _json_levels(signal: Signal) -> _JsonLevels:
    top = signal.new_request().DESCRIPTOR
    resource = _child(top, 1)
    scope = _child(resource, 2)
    item = _child(scope, 2)
    if signal is not Signal.METRICS:
        return _JsonLevels(_keys(top, 1), _keys(resource, 2), _keys(scope, 2), (), None)
    kinds = tuple(key for n in (5, 7, 9, 10, 11) for key in _keys(item, n))
    points = _keys(_child(item, 5), 1)  # data_points: field 1 in every data kind
    return _JsonLevels(_keys(top, 1), _keys(resource, 2), _keys(scope, 2), kinds, points)


def _entries(obj: Any, keys: tuple[str, ...]) -> list[Any]:
    """The list under any of ``keys`` in ``obj`` (the conversion takes every spelling present)."""
    if not isinstance(obj, dict):
        return []
    found: list[Any] = []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            found.extend(value)
    return found
