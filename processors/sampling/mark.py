"""Marking kept items: ``errorgate.sampling.adjusted_count`` and the raised ``ot=th`` threshold."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate import attributes
from errorgate.processors.sampling import consistent

ADJUSTED_COUNT = "errorgate.sampling.adjusted_count"
ADJUSTED_BYTES = ADJUSTED_COUNT.encode()
_MEMO_SIZE = 1024


class Marker:
    """Marks kept items; the few distinct values it writes are built once (bounded memos)."""

    def __init__(self) -> None:
        self._tags: dict[tuple[type, float], bytes] = {}
        self._states: dict[tuple[str, int], str] = {}

    def item(self, item: Span | LogRecord, adjusted: float) -> None:
        """Set the adjusted count, replacing one the item may carry already."""
        if ADJUSTED_BYTES in item.SerializeToString():
            attributes.set_value(item.attributes, ADJUSTED_COUNT, adjusted)
        else:
            self._append(item, adjusted)

    def span(self, span: Span, adjusted: float, threshold: int | None, fresh: bool) -> None:
        """Mark a kept span; ``fresh``: it is known to carry no adjusted count yet."""
        if fresh:
            self._append(span, adjusted)
        else:
            attributes.set_value(span.attributes, ADJUSTED_COUNT, adjusted)
        if threshold:
            key = (span.trace_state, threshold)
            state = self._states.get(key)
            if state is None:
                if len(self._states) >= _MEMO_SIZE:
                    self._states.clear()
                state = self._states[key] = consistent.with_threshold(*key)
            span.trace_state = state

    def _append(self, item: Span | LogRecord, adjusted: float) -> None:
        # Merging the serialized attribute appends it in one C call (appending a KeyValue
        # builds and copies a message in Python).
        kind = type(item)
        tag = self._tags.get((kind, adjusted))
        if tag is None:
            if len(self._tags) >= _MEMO_SIZE:
                self._tags.clear()
            kv = KeyValue(key=ADJUSTED_COUNT, value=attributes.to_any(adjusted))
            tag = self._tags[kind, adjusted] = kind(attributes=[kv]).SerializeToString()
        item.MergeFromString(tag)
