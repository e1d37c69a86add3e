"""The limits ``validate_request`` checks items against (``errorgate.intake.validation``): string lengths,
attribute counts and nesting depth, and what a request's shape and wire sizes prove about them
without a walk."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence, Sized

from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from errorgate.otlp.flat import ResourceFit, WireSizes
from errorgate.receiver.config import ValidationConfig


class Limits:
    """One request's limits, and which of its parts are small enough to need no check of them."""

    __slots__ = ("flat", "max_attrs", "max_depth", "max_len", "max_len_chars", "sizes", "small")

    def __init__(self, config: ValidationConfig, flat: bool, data: bytes) -> None:
        self.max_depth = config.max_attribute_depth
        self.max_len = config.max_string_length
        self.max_attrs = config.max_attributes
        # A str of n code points encodes to at most 4n UTF-8 bytes: below this no encoding is needed.
        self.max_len_chars = config.max_string_length // 4
        # True when the request holds no nested attribute values at all (see flat_otlp).
        self.flat = flat
        # An item serializing to at most this many bytes can hold neither a string longer than
        # the limit nor a list of more than max_attributes entries (each entry takes >= 2 bytes).
        self.small = min(self.max_len, 2 * self.max_attrs + 1)
        # Wire sizes of the request's parts (only a flat request's size says enough to use them).
        self.sizes = WireSizes(data, self.small) if flat else None

    def fits(self, resources: Sized) -> Iterable[ResourceFit]:
        """Per resource entry of the request, what wire sizes alone prove (see ``WireSizes``)."""
        if self.sizes is None:
            return itertools.repeat((False, False))
        return self.sizes.fits(len(resources))

    def size_class(self, item: Message, wire_size: int | None = None) -> int:
        """0: nothing in ``item`` can break a limit; 1: only attribute counts can; 2: check all.
        ``wire_size``: the item's received size when known (it bounds the content as well)."""
        if not self.flat:
            return 2
        size = item.ByteSize() if wire_size is None else wire_size
        if size <= self.small:
            return 0
        return 1 if size <= self.max_len else 2

    def attributes(self, attrs: Sequence[KeyValue], depth: int = 1) -> str | None:
        """Reason the attribute list breaks a limit, or None."""
        if len(attrs) > self.max_attrs:
            return f"more than {self.max_attrs} attributes"
        max_chars = self.max_len_chars
        for kv in attrs:
            key = kv.key
            if len(key) > max_chars and self._too_long(key):
                return f"attribute key longer than {self.max_len} bytes"
            value = kv.value
            kind = value.WhichOneof("value")
            if kind == "string_value":
                s = value.string_value
                if len(s) > max_chars and self._too_long(s):
                    return f"string longer than {self.max_len} bytes"
            elif kind is not None and kind in WALKED_KINDS:
                reason = self.value(value, depth)
                if reason:
                    return reason
        return None

    def value(self, value: AnyValue, depth: int = 1) -> str | None:
        """Reason an AnyValue (at nesting level ``depth``, 1 = attribute value) breaks a limit."""
        kind = value.WhichOneof("value")
        if kind == "string_value":
            s = value.string_value
            if len(s) > self.max_len_chars and self._too_long(s):
                return f"string longer than {self.max_len} bytes"
        elif kind == "bytes_value":
            if len(value.bytes_value) > self.max_len:
                return f"bytes value longer than {self.max_len} bytes"
        elif kind == "array_value":
            if depth >= self.max_depth and value.array_value.values:
                return f"attribute nesting deeper than {self.max_depth}"
            for v in value.array_value.values:
                reason = self.value(v, depth + 1)
                if reason:
                    return reason
        elif kind == "kvlist_value":
            if depth >= self.max_depth and value.kvlist_value.values:
                return f"attribute nesting deeper than {self.max_depth}"
            return self.attributes(value.kvlist_value.values, depth + 1)
        return None

    def _too_long(self, s: str) -> bool:
        return len(s) > self.max_len or len(s.encode("utf-8", "surrogatepass")) > self.max_len


WALKED_KINDS = frozenset(("array_value", "kvlist_value", "bytes_value"))
