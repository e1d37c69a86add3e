"""Attribute values for validation tests."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def nested(levels: int, leaf: str = "leaf") -> AnyValue:
    """A value ``levels`` deep: a string at 1, then arrays and key/value lists alternating."""
    value = AnyValue(string_value=leaf)
    for i in range(levels - 1):
        outer = AnyValue()
        if i % 2:
            outer.kvlist_value.values.add(key="k", value=value)
        else:
            outer.array_value.values.append(value)
        value = outer
    return value
