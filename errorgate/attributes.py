"""Small helpers for OTLP KeyValue lists (get/set/remove by key, Python value conversion)."""

from __future__ import annotations

from collections.abc import Iterable, MutableSequence
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

AttrValue = str | bool | int | float | bytes | list[Any] | dict[str, Any] | None


def get(attrs: Iterable[KeyValue], key: str) -> AttrValue:
    """Python value of attribute ``key`` or None when absent."""
    for kv in attrs:
        if kv.key == key:
            return to_python(kv.value)
    return None


def get_str(attrs: Iterable[KeyValue], key: str, default: str = "") -> str:
    value = get(attrs, key)
    return default if value is None else str(value)


def has(attrs: Iterable[KeyValue], key: str) -> bool:
    return any(kv.key == key for kv in attrs)


def set_value(attrs: MutableSequence[KeyValue], key: str, value: AttrValue) -> None:
    """Set (replace or append) attribute ``key`` on a repeated KeyValue field."""
    for kv in attrs:
        if kv.key == key:
            kv.value.CopyFrom(to_any(value))
            return
    attrs.append(KeyValue(key=key, value=to_any(value)))  # type: ignore[attr-defined]


def remove(attrs: MutableSequence[KeyValue], key: str) -> bool:
    for i, kv in enumerate(attrs):
        if kv.key == key:
            del attrs[i]
            return True
    return False


def to_dict(attrs: Iterable[KeyValue]) -> dict[str, AttrValue]:
    return {kv.key: to_python(kv.value) for kv in attrs}


def to_python(value: AnyValue) -> AttrValue:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: to_python(kv.value) for kv in value.kvlist_value.values}
    result: AttrValue = getattr(value, kind)
    return result


def to_any(value: AttrValue) -> AnyValue:
    out = AnyValue()
    if value is None:
        return out
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, list):
        out.array_value.values.extend(to_any(v) for v in value)
    elif isinstance(value, dict):
        out.kvlist_value.values.extend(KeyValue(key=k, value=to_any(v)) for k, v in value.items())
    else:
        raise TypeError(f"unsupported attribute value type {type(value).__name__}")
    return out
