"""Writing classify's tags onto an item: serialized attributes merged in one C-level call.

Building a KeyValue message per tag costs microseconds each (a Python object per attribute and
its AnyValue); failing items repeat the same few tag values, so each (key, value) is serialized
once as a repeated ``attributes`` field entry and the item's new tags are appended with one
``MergeFromString`` (protobuf merging appends to repeated fields, in order).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence

from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.attributes import AttrValue, set_value, to_any

_CACHE_SIZE = 8192


def _field_tag(message: type[Message]) -> bytes:
    """The wire tag of ``message.attributes`` (length-delimited)."""
    number = message.DESCRIPTOR.fields_by_name["attributes"].number
    return _varint(number << 3 | 2)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


SPAN_ATTRIBUTES = _field_tag(Span)
LOG_ATTRIBUTES = _field_tag(LogRecord)


Tag = tuple[str, str | bool]  # classify writes text and flags only (True == 1: no ints here)


class TagWriter:
    def __init__(self) -> None:
        self._encoded: dict[tuple[bytes, str, type, AttrValue], bytes] = {}
        # A whole tag set -> (its entries serialized, its keys): failing items repeat whole sets.
        self._sets: dict[tuple[bytes, tuple[Tag, ...]], tuple[bytes, frozenset[str]]] = {}

    def write(
        self,
        item: Message,
        field_tag: bytes,
        attributes: MutableSequence[KeyValue],
        present: Mapping[str, object],
        tags: tuple[Tag, ...],
    ) -> None:
        """``set_value(attributes, key, value)`` for each tag in order (``attributes``: the repeated
        field of ``item`` with wire tag ``field_tag``; ``present``: its decoded keys). Keys already
        present are replaced in place; the others are appended together."""
        found = self._sets.get((field_tag, tags))
        if found is None:
            if len(self._sets) >= _CACHE_SIZE:
                self._sets.clear()
            found = self._sets[(field_tag, tags)] = (
                b"".join(self._entry(field_tag, key, value) for key, value in tags),
                frozenset(key for key, _ in tags),
            )
        if present.keys().isdisjoint(found[1]):
            item.MergeFromString(found[0])  # the usual case: none of the tags is on the item yet
            return
        new: list[bytes] = []
        for key, value in tags:
            if key in present:
                set_value(attributes, key, value)
                continue
            new.append(self._entry(field_tag, key, value))
        if new:
            item.MergeFromString(b"".join(new))

    def _entry(self, field_tag: bytes, key: str, value: AttrValue) -> bytes:
        cache_key = (field_tag, key, type(value), value)
        data = self._encoded.get(cache_key)
        if data is None:
            if len(self._encoded) >= _CACHE_SIZE:
                self._encoded.clear()
            data = self._encoded[cache_key] = _entry(field_tag, key, value)
        return data


def _entry(field_tag: bytes, key: str, value: AttrValue) -> bytes:
    kv = KeyValue(key=key, value=to_any(value)).SerializeToString()
    return field_tag + _varint(len(kv)) + kv
