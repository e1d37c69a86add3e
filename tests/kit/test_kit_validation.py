"""validation: malformed, oversized or invalid messages fail before the handler runs, with
error.type=validation on the span and messages naming fields, never values."""

from __future__ import annotations

import pydantic
import pytest
from errorgate_kit.validation import PayloadTooLarge, ValidationError, check_schema, parse, validated
from opentelemetry import trace
from opentelemetry.trace import StatusCode


class Order(pydantic.BaseModel):
    sku: str
    qty: int = pydantic.Field(gt=0)


SCHEMA = {"title": "order", "type": "object", "required": ["sku", "qty"],
          "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}  # fmt: skip


@pytest.mark.parametrize("schema", [Order, SCHEMA], ids=["pydantic", "jsonschema"])
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"sku": "A1", "qty": 0}', "qty"),
        (b'{"sku": "A1"', "malformed JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"sku": "A1", "qty": 1, "pad": "' + b"x" * 200 + b'"}', "exceeds the limit of 100 bytes"),
    ],
)
def test_bad_messages_never_reach_the_handler(spans, schema, payload, message) -> None:
    handled = []
    handler = validated(schema, max_bytes=100)(handled.append)
    with (
        trace.get_tracer("t").start_as_current_span("consume"),
        pytest.raises(ValidationError, match=message),
    ):
        handler(payload)
    assert handled == []
    span = spans.named("consume")[0]
    assert span.attributes["error.type"] == "validation" and span.status.status_code is StatusCode.ERROR
    assert span.events[0].name == "exception"


def test_messages_name_fields_not_values(spans) -> None:
    with pytest.raises(ValidationError) as e:
        parse(SCHEMA, {"sku": "secret-4111111111111111", "qty": "lots"})
    assert "qty" in str(e.value) and "4111" not in str(e.value) and "lots" not in str(e.value)
    with pytest.raises(ValidationError) as e:
        parse(Order, {"sku": 4111111111111111, "qty": 1})
    assert "sku" in str(e.value) and "4111" not in str(e.value)


def test_valid_messages_arrive_parsed(spans) -> None:
    got = []
    validated(Order)(got.append)(b'{"sku": "A1", "qty": 2}')
    assert got == [Order(sku="A1", qty=2)]
    assert parse(SCHEMA, '{"sku": "A1", "qty": 2}') == {"sku": "A1", "qty": 2}
    assert issubclass(PayloadTooLarge, ValidationError)


def test_a_broken_schema_fails_at_startup() -> None:
    import jsonschema

    with pytest.raises(jsonschema.SchemaError):
        check_schema({"type": "objekt"})
    with pytest.raises(jsonschema.SchemaError):
        validated({"type": 5})
