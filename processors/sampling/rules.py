"""``sample``'s attribute rules: keep a trace when a span (or its resource) has a matching attribute."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from errorgate import attributes

Rule = Callable[[Iterable[KeyValue]], bool]


def compile_rule(key: str, values: Sequence[str | int | float | bool] | None, pattern: str | None) -> Rule:
    if pattern is not None:
        regex = re.compile(pattern)

        def by_pattern(attrs: Iterable[KeyValue]) -> bool:
            value = attributes.get(attrs, key)
            return value is not None and regex.search(str(value)) is not None

        return by_pattern
    wanted = {_text(v) for v in values or ()}

    def by_value(attrs: Iterable[KeyValue]) -> bool:
        value = attributes.get(attrs, key)
        return value is not None and _text(value) in wanted

    return by_value


def _text(value: object) -> str:
    # YAML `true` and an attribute "true" should match either way.
    return str(value).lower() if isinstance(value, bool) else str(value)
