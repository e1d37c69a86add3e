"""A "flat" copy of the OTLP schema used to find nested attribute values at C speed.

The flat copy is proto2 and gives ``ArrayValue`` and ``KeyValueList`` a required field that
never occurs on the wire, so a request parsed with it is "initialized" exactly when it holds
no nested value. Serializing it checks that in C, with no Python per attribute.
Validation uses this to skip its per-attribute walk for the (usual) requests that carry
no nested values. A second copy also marks span links the same way, so one pass tells that a
request holds neither nested values nor links, and validation need not look for links span by
span either.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence, Sized
from typing import NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError, EncodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from errorgate.signals import Signal

_PREFIX = "errorgate.flat."
_NESTED_CONTAINERS = frozenset({"ArrayValue", "KeyValueList"})
_LINKS = frozenset({"Link"})  # Span.Link (the only message so named)
# Which messages each flat copy marks (its name prefixes the copy's packages).
_MARKED = {"nested": _NESTED_CONTAINERS, "links": _LINKS, "both": _NESTED_CONTAINERS | _LINKS}
_MARKER_FIELD = 536870911  # the highest field number: never used by OTLP
_FILES = {
    Signal.TRACES: (
        trace_service_pb2.DESCRIPTOR,
        "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
    ),
    Signal.LOGS: (
        logs_service_pb2.DESCRIPTOR,
        "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
    ),
    Signal.METRICS: (
        metrics_service_pb2.DESCRIPTOR,
        "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest",
    ),
}


def _rename_types(message: descriptor_pb2.DescriptorProto, prefix: str, marked: frozenset[str]) -> None:
    for field in message.field:
        if field.type_name.startswith(".opentelemetry."):
            field.type_name = "." + prefix + field.type_name[1:]
    if message.name in marked:
        # Never present on the wire, so any ArrayValue/KeyValueList (or Link) in a parsed
        # request leaves the message uninitialized.
        message.field.add(
            name="errorgate_marker",
            number=_MARKER_FIELD,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
        )
    for nested in message.nested_type:
        _rename_types(nested, prefix, marked)


def _clear_proto3_optional(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("proto3_optional")
    for nested in message.nested_type:
        _clear_proto3_optional(nested)


def _add_file(
    pool: descriptor_pool.DescriptorPool,
    fd: FileDescriptor,
    done: set[str],
    prefix: str,
    marked: frozenset[str],
) -> None:
    if fd.name in done:
        return
    for dep in fd.dependencies:
        _add_file(pool, dep, done, prefix, marked)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    proto.name = prefix + proto.name
    proto.package = prefix + proto.package
    proto.syntax = "proto2"  # required fields exist only in proto2
    for message in proto.message_type:
        _clear_proto3_optional(message)
    deps = [prefix + d for d in proto.dependency]
    del proto.dependency[:]
    proto.dependency.extend(deps)
    del proto.service[:]
    for message in proto.message_type:
        _rename_types(message, prefix, marked)
    pool.Add(proto)
    done.add(fd.name)


@functools.cache
def _flat_classes(marks: str = "nested") -> dict[Signal, type[Message]]:
    """Per signal, the flat request class whose ``_MARKED[marks]`` messages are marked."""
    prefix, marked = (_PREFIX if marks == "nested" else f"{_PREFIX}{marks}."), _MARKED[marks]
    pool = descriptor_pool.DescriptorPool()
    done: set[str] = set()
    classes: dict[Signal, type[Message]] = {}
    for signal, (fd, name) in _FILES.items():
        _add_file(pool, fd, done, prefix, marked)
        classes[signal] = message_factory.GetMessageClass(pool.FindMessageTypeByName(prefix + name))
    return classes


def _holds_none(cls: type[Message], data: bytes) -> bytes | None:
    """``data`` parsed as ``cls`` and serialized again, if none of its marked messages is in it."""
    flat = cls()
    try:
        flat.ParseFromString(data)
        # Serializing checks required fields in C; IsInitialized() is about three times slower.
        return flat.SerializeToString()
    except (DecodeError, EncodeError):
        return None


class RequestShape(NamedTuple):
    nested: bool  # may hold array/kvlist attribute values (an empty array counts too)
    links: bool  # may hold span links
    # ``data`` is exactly what upb serializes for what it decodes to (fields in order, shortest
    # varints, unknown fields only where upb writes them back: last; explicit default values
    # aside): the received bytes can then stand for the serialized request, byte-level readers
    # included.
    canonical: bool


def request_shape(signal: Signal, data: bytes) -> RequestShape:
    """What a serialized request may hold; "may" means the caller checks the decoded request
    itself. One C-speed pass answers for the usual request, which has neither nested values nor
    links; more passes tell them apart."""
    again = _holds_none(_flat_classes("both")[signal], data)
    if again is not None:
        return RequestShape(False, False, again == data)
    nested = _holds_none(_flat_classes()[signal], data) is None
    if signal is not Signal.TRACES:
        return RequestShape(nested, False, False)
    # Without nesting, the first pass failed for a link; with it, only a pass of its own can tell.
    links = not nested or _holds_none(_flat_classes("links")[signal], data) is None
    return RequestShape(nested, links, False)


# ---------------------------------------------------------------- wire sizes
#
# OTLP export requests of every signal share one outline: resource entries (field 1) hold a
# ``resource`` (1) and scope entries (2), which hold a ``scope`` (1) and the items (2). An
# "outline" schema of that shape keeps the parts as undecoded bytes, so their wire sizes come
# at C speed — far cheaper than ``ByteSize()``, which upb answers by serializing.

_OUTLINE = "errorgate.outline."


@functools.cache
def _outline_classes() -> tuple[type[Message], type[Message]]:
    """(Top: resource entries as bytes, Deep: resource/scope headers and items as bytes)."""
    fdp = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="errorgate/outline.proto", package=_OUTLINE[:-1], syntax="proto2"
    )

    def message(name: str, *fields: tuple[str, int, str | None]) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, type_name in fields:
            # Repeated everywhere: a singular field sent twice is merged by decoding, so its
            # bound is the sum over the occurrences.
            f = msg.field.add(name=field_name, number=number, label=fdp.LABEL_REPEATED)
            if type_name is None:
                f.type = fdp.TYPE_BYTES
            else:
                f.type, f.type_name = fdp.TYPE_MESSAGE, "." + _OUTLINE + type_name

    message("Top", ("resources", 1, None))
    message("Scope", ("head", 1, None), ("items", 2, None))
    message("Resource", ("head", 1, None), ("scopes", 2, "Scope"))
    message("Deep", ("resources", 1, "Resource"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    top, deep = (pool.FindMessageTypeByName(_OUTLINE + n) for n in ("Top", "Deep"))
    return message_factory.GetMessageClass(top), message_factory.GetMessageClass(deep)


def outline_deep_class() -> type[Message]:
    """The outline down to items: resource entries holding their resource header and scope
    entries, which hold their scope header and items, headers and items as undecoded bytes."""
    return _outline_classes()[1]


# Per scope entry: (its scope header fits, every item fits, the item sizes or None).
ScopeFit = tuple[bool, bool, list[int] | None]
# Per resource entry: (its resource header fits, per scope entry fits — or True: everything in
# the entry fits, False: not known).
ResourceFit = tuple[bool, list[ScopeFit] | bool]
_UNKNOWN_SCOPE: ScopeFit = (False, False, None)
_FITTING_SCOPE: ScopeFit = (True, True, None)


class WireSizes:
    """Which parts of a received request are at most ``bound`` bytes on the wire.

    A part's received bytes contain everything it decodes to (every occurrence of every field
    lies within them), so a part of n bytes holds no string longer than n and no list of more
    than n/2 entries (an entry takes at least 2 bytes) — whatever the encoding's field order,
    repetition or unknown fields. Answers are exact or "not known to fit" (then the caller
    checks the decoded part itself)."""

    __slots__ = ("_data", "all_fit", "bound")

    def __init__(self, data: bytes, bound: int) -> None:
        self.bound = bound
        self._data = data
        top = _outline_classes()[0]()
        try:
            top.ParseFromString(data)
        except DecodeError:
            self.all_fit = False
            return
        # The usual case settles here: every resource entry (its scopes and items) fits.
        self.all_fit = max(map(len, top.resources), default=0) <= bound  # type: ignore[attr-defined]

    def fits(self, count: int) -> Iterable[ResourceFit]:
        """Per resource entry (``count`` of them in the decoded request): what fits."""
        if self.all_fit:
            return itertools.repeat((True, True))
        deep = _outline_classes()[1]()
        try:
            deep.ParseFromString(self._data)
        except DecodeError:
            return itertools.repeat((False, False))
        entries = deep.resources  # type: ignore[attr-defined]
        if len(entries) != count:
            return itertools.repeat((False, False))  # cannot happen for bytes that decoded
        bound = self.bound
        out: list[ResourceFit] = []
        for entry in entries:
            scopes: list[ScopeFit] = []
            for scope in entry.scopes:
                sizes = list(map(len, scope.items))
                all_items = max(sizes, default=0) <= bound
                scopes.append((sum(map(len, scope.head)) <= bound, all_items, None if all_items else sizes))
            out.append((sum(map(len, entry.head)) <= bound, scopes))
        return out


def scope_items(data: bytes) -> list[Sequence[bytes]] | None:
    """The serialized items (spans, log records, metrics) of each scope entry of the export
    request ``data``, in the order a parser yields them; None when the bytes do not parse.

    One C-level parse of the outline: a few µs for a request of hundreds of spans, where a
    walk of the bytes in Python costs about half a microsecond per span. When ``data`` is upb's
    serialization of a request, each item is that item's own ``SerializeToString()`` (a nested
    message is encoded as on its own)."""
    deep = _outline_classes()[1]()
    try:
        deep.ParseFromString(data)
    except DecodeError:
        return None
    return [scope.items for entry in deep.resources for scope in entry.scopes]  # type: ignore[attr-defined]


def scope_fits(fits: list[ScopeFit] | bool, scopes: Sized) -> Iterable[ScopeFit]:
    """Per scope entry of one resource entry (``scopes``, as decoded), from its ``ResourceFit``."""
    if fits is True:
        return itertools.repeat(_FITTING_SCOPE)
    if fits is False or len(fits) != len(scopes):
        return itertools.repeat(_UNKNOWN_SCOPE)
    return fits
