"""Schema validation on consumption: parse and check a message before any side effect.

A pydantic model or a JSON Schema document; oversized payloads, malformed JSON and schema
violations all raise ``ValidationError`` naming the field paths (never the values: they may be
personal data), recorded on the current span with ``error.type`` = ``validation`` and an
``exception`` event, which classify files under category ``validation`` (domain ``data``)::

    @validated(Order, max_bytes=64 * 1024)
    def handle(order: Order) -> None:   # never called with a bad message
        reserve(order)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jsonschema
import pydantic
from opentelemetry import trace

from errorgate_kit._otel import record_error

T = TypeVar("T")
ERROR_TYPE = "validation"
DEFAULT_MAX_BYTES = 1024 * 1024
Schema = type[pydantic.BaseModel] | Mapping[str, Any]


class ValidationError(ValueError):
    """The payload is not acceptable. ``problems``: ``(field path, reason)`` pairs."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        self.problems = problems or []
        detail = "; ".join(f"{path or '<root>'}: {reason}" for path, reason in self.problems[:10])
        super().__init__(f"{message}: {detail}" if detail else message)


class PayloadTooLarge(ValidationError):
    """Bigger than ``max_bytes``: refused before it is parsed."""


def _decode(payload: bytes | str | Mapping[str, Any], max_bytes: int) -> Any:
    if isinstance(payload, Mapping):
        return payload
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"payload of {len(raw)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        # Decoded as UTF-8 first: ``json.loads(bytes)`` would guess UTF-16/32 from the first bytes.
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValidationError("payload is not UTF-8", [("", f"invalid byte at offset {e.start}")]) from None
    except json.JSONDecodeError as e:
        raise ValidationError(
            "malformed JSON", [("", f"{e.msg} at line {e.lineno} column {e.colno}")]
        ) from None


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts)


def _check(schema: Schema, data: Any) -> Any:
    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        try:
            return schema.model_validate(data)
        except pydantic.ValidationError as e:
            problems = [(_path(err["loc"]), err["msg"]) for err in e.errors(include_input=False)]
            raise ValidationError(f"invalid {schema.__name__}", problems) from None
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        # ``e.message`` quotes the offending value; the validator keyword says what was wrong without it.
        problems = [(_path(e.absolute_path), f"fails {e.validator!r} constraint") for e in errors]
        raise ValidationError(f"invalid {schema.get('title', 'message')}", problems)
    return data


def parse(
    schema: Schema, payload: bytes | str | Mapping[str, Any], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """The validated message (a model instance, or the decoded JSON for a JSON Schema); raises
    ``ValidationError`` recorded on the current span."""
    try:
        return _check(schema, _decode(payload, max_bytes))
    except ValidationError as exc:
        record_error(trace.get_current_span(), exc, ERROR_TYPE)
        raise


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.SchemaError`` for a broken schema (call it at start-up, not per message)."""
    jsonschema.validators.validator_for(schema).check_schema(schema)


def validated(
    schema: Schema, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: the handler's first argument arrives parsed and valid, or the handler is not called."""
    if not isinstance(schema, type):
        check_schema(schema)

    def wrap(handler: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(handler)
        def run(payload: bytes | str | Mapping[str, Any], *args: Any, **kwargs: Any) -> T:
            return handler(parse(schema, payload, max_bytes=max_bytes), *args, **kwargs)

        return run

    return wrap
