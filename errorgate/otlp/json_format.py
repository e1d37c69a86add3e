"""OTLP/JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding).

The protobuf JSON mapping with the differences the OTLP spec mandates: trace and span
ids are lowercase hex (not base64) and enums are integers. On input, unknown fields are
ignored (the spec requires it, for forward compatibility), int64 values are accepted as
strings or numbers, enums as integers or names, and keys as lowerCamelCase or the
original snake_case names.

A small descriptor-driven codec rather than ``google.protobuf.json_format``: that one
is generic pure Python and several times slower, and this runs for every batch the file
exporter writes and every JSON request received.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from errorgate.signals import ExportRequest, Signal

_ID_FIELDS = frozenset(("trace_id", "span_id", "parent_span_id"))
_INT64_TYPES = frozenset(
    (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_SINT64,
    )
)
_FLOAT_TYPES = frozenset((FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT))
_INT_TYPES = frozenset(
    (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SINT32,
    )
)
_UNSIGNED = frozenset(
    (
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
    )
)
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


# ---------------------------------------------------------------- encoding


def to_json(request: ExportRequest) -> str:
    """Compact single-line OTLP/JSON of ``request`` (the Collector file exporter's line format)."""
    return json.dumps(_encode(request), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def message_to_json(message: Message) -> str:
    """Compact OTLP/JSON of any protobuf message (responses, google.rpc.Status)."""
    return json.dumps(_encode(message), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encode(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        name, convert = _encoder(field)
        if field.is_repeated:
            out[name] = [convert(v) for v in value]
        else:
            out[name] = convert(value)
    return out


@cache
def _encoder(field: FieldDescriptor) -> tuple[str, Callable[[Any], Any]]:
    t = field.type
    convert: Callable[[Any], Any]
    if t == FieldDescriptor.TYPE_MESSAGE:
        is_any = field.message_type is not None and field.message_type.full_name == "google.protobuf.Any"
        convert = _encode_any if is_any else _encode
    elif t == FieldDescriptor.TYPE_BYTES:
        convert = bytes.hex if field.name in _ID_FIELDS else _b64
    elif t in _INT64_TYPES:
        convert = str
    elif t in _FLOAT_TYPES:
        convert = _float_out
    else:  # str, bool, int32 kinds, enums (as integers)
        convert = _identity
    return field.json_name, convert


def _identity(value: Any) -> Any:
    return value


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _float_out(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _encode_any(value: Message) -> dict[str, Any]:
    # google.rpc.Status details: the type URL and the packed bytes (base64), enough for
    # clients that look for RetryInfo; OTLP requests never contain Any.
    return {"@type": value.type_url, "value": _b64(value.value)}  # type: ignore[attr-defined]


# ---------------------------------------------------------------- decoding


# Nesting (objects and arrays) that ``from_json`` accepts unless told otherwise; deeper than
# what the protobuf decoder accepts (100 message levels) would give requests no next hop can read.
DEFAULT_MAX_DEPTH = 64


class JsonTooDeep(ValueError):
    """An OTLP/JSON document nested deeper than allowed (a ``ValueError``: the request is malformed)."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"OTLP/JSON nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def from_json(signal: Signal, data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> ExportRequest:
    """Parse an OTLP/JSON export request. Raises ``ValueError`` naming the bad field (with
    its position); the message never quotes payload values. Objects and arrays nested deeper
    than ``max_depth`` raise ``JsonTooDeep``."""
    return json_to_request(signal, load_json(data, max_depth), max_depth)


def load_json(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any]:
    """The JSON object of an OTLP/JSON body (step one of ``from_json``); ``ValueError`` if it is
    not one. Nesting beyond the parser's recursion limit raises ``JsonTooDeep`` too; nesting
    up to it is checked by ``json_to_request``, on the fields it converts."""
    try:
        # OTLP/JSON is UTF-8; json.loads would otherwise guess UTF-16/32 from the bytes.
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        doc = json.loads(text)
    except UnicodeDecodeError:
        raise ValueError("OTLP/JSON body is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        # The C parser stops cleanly at the interpreter's recursion limit (about 1000 levels).
        raise JsonTooDeep(max_depth) from None
    if not isinstance(doc, dict):
        raise ValueError(f"OTLP/JSON body must be an object, got {type(doc).__name__}")
    return doc


def json_to_request(signal: Signal, doc: dict[str, Any], max_depth: int = DEFAULT_MAX_DEPTH) -> ExportRequest:
    """The export request a parsed OTLP/JSON document (``load_json``) stands for (step two of
    ``from_json``). The recursion is one level per message, stopped at ``max_depth``."""
    request = signal.new_request()
    _decode(doc, request, "", 1, max_depth)
    return request


@cache
def _fields_by_json_key(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    fields: dict[str, FieldDescriptor] = {}
    for field in descriptor.fields:
        fields[field.name] = field
        fields[field.json_name] = field
    return fields


def _decode(obj: dict[str, Any], message: Message, path: str, depth: int, max_depth: int) -> None:
    """Fill ``message`` from ``obj``, an object ``depth`` levels deep in the document."""
    if depth > max_depth:
        raise JsonTooDeep(max_depth)
    fields = _fields_by_json_key(message.DESCRIPTOR)
    for key, value in obj.items():
        field = fields.get(key)
        if field is None or value is None:
            continue  # unknown fields are ignored; null means "not set"
        where = f"{path}.{field.json_name}" if path else field.json_name
        if field.is_repeated:
            if not isinstance(value, list):
                raise ValueError(f"{where}: expected an array, got {type(value).__name__}")
            container = getattr(message, field.name)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for i, item in enumerate(value):
                    if not isinstance(item, dict):
                        raise ValueError(f"{where}[{i}]: expected an object, got {type(item).__name__}")
                    _decode(item, container.add(), f"{where}[{i}]", depth + 2, max_depth)
            else:
                container.extend(_scalar(field, item, f"{where}[{i}]") for i, item in enumerate(value))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
            sub = getattr(message, field.name)
            sub.SetInParent()
            _decode(value, sub, where, depth + 1, max_depth)
        else:
            setattr(message, field.name, _scalar(field, value, where))


def _scalar(field: FieldDescriptor, value: Any, where: str) -> Any:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        if isinstance(value, str):
            if not value.isascii():
                _require_utf8(value, where)
            return value
    elif t == FieldDescriptor.TYPE_BYTES:
        if isinstance(value, str):
            return _bytes_in(field, value, where)
    elif t == FieldDescriptor.TYPE_BOOL:
        if isinstance(value, bool):
            return value
    elif t in _INT64_TYPES or t in _INT_TYPES:
        return _int_in(t, value, where)
    elif t in _FLOAT_TYPES:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            special = _SPECIAL_FLOATS.get(value)
            if special is not None:
                return special
            try:
                return float(value)
            except ValueError:
                pass
    elif t == FieldDescriptor.TYPE_ENUM:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            enum_type = field.enum_type
            # Enum names are ASCII; upb's lookup fails with SystemError on a lone surrogate.
            ascii_name = value.isascii()
            enum_value = enum_type.values_by_name.get(value) if enum_type is not None and ascii_name else None
            if enum_value is not None:
                return enum_value.number
            raise ValueError(f"{where}: unknown enum value name")
    raise ValueError(f"{where}: invalid value of type {type(value).__name__}")


def _require_utf8(value: str, where: str) -> None:
    """JSON can escape lone surrogates ("\\ud800"), which protobuf strings (UTF-8) cannot hold;
    the codec's own error would quote the character."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: string is not valid Unicode (a lone surrogate)") from None


def _bytes_in(field: FieldDescriptor, value: str, where: str) -> bytes:
    if field.name in _ID_FIELDS:
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{where}: not a hex string (OTLP/JSON ids are hex)") from None
    try:
        padded = value + "=" * (-len(value) % 4)
        if "-" in value or "_" in value:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: not valid base64") from None


def _int_in(field_type: int, value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected an integer, got bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            try:
                as_float = float(value)
            except ValueError:
                raise ValueError(f"{where}: expected an integer (number or string)") from None
            if not as_float.is_integer():
                raise ValueError(f"{where}: expected an integer, got a fraction") from None
            number = int(as_float)
    else:
        raise ValueError(f"{where}: expected an integer, got {type(value).__name__}")
    bits = 64 if field_type in _INT64_TYPES else 32
    low, high = (0, 2**bits - 1) if field_type in _UNSIGNED else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not low <= number <= high:
        raise ValueError(f"{where}: integer out of range for a {bits}-bit field")
    return number
