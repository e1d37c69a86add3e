"""Marking kept items: ``errorgate.sampling.adjusted_count`` and the raised ``ot=th`` threshold."""

from __future__ import annotations

from collections.abc import Sequence

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

    def items(
        self, items: Sequence[Span | LogRecord], adjusted: Sequence[float], fresh: bool = False
    ) -> None:
        """``item`` for each of ``items`` (with ``adjusted[i]``), searching their bytes at once:
        one search of the joined bytes costs about what one per item's call overhead does
        (a match across two items' bytes is a false alarm, handled exactly per item).
        ``fresh``: known to carry no adjusted count (nothing to search)."""
        if not items:
            return
        if not fresh and ADJUSTED_BYTES in b"".join([i.SerializeToString() for i in items]):
            for item, value in zip(items, adjusted, strict=True):
                self.item(item, value)
        else:  # none has one: append, with each distinct value's bytes looked up once
            tags = {value: self._tag(type(items[0]), value) for value in set(adjusted)}
            for item, value in zip(items, adjusted, strict=True):
                item.MergeFromString(tags[value])

    def spans(self, spans: Sequence[Span], decided: Sequence[tuple[float, int | None]], fresh: bool) -> None:
        """``span`` for each of ``spans`` with its (adjusted count, threshold) from ``decided``."""
        if not fresh:
            for span, (adjusted, threshold) in zip(spans, decided, strict=True):
                self.span(span, adjusted, threshold, False)
            return
        tags = {adjusted: self._tag(Span, adjusted) for adjusted, _ in set(decided)}
        for span, (adjusted, threshold) in zip(spans, decided, strict=True):
            span.MergeFromString(tags[adjusted])
            if threshold:
                self._raise(span, threshold)

    def span(self, span: Span, adjusted: float, threshold: int | None, fresh: bool) -> None:
        """Mark a kept span; ``fresh``: it is known to carry no adjusted count yet."""
        if fresh:
            self._append(span, adjusted)
        else:
            attributes.set_value(span.attributes, ADJUSTED_COUNT, adjusted)
        if threshold:
            self._raise(span, threshold)

    def _raise(self, span: Span, threshold: int) -> None:
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
        item.MergeFromString(self._tag(type(item), adjusted))

    def _tag(self, kind: type[Span] | type[LogRecord], adjusted: float) -> bytes:
        """The attribute serialized as ``kind``'s attributes field (memoized)."""
        tag = self._tags.get((kind, adjusted))
        if tag is None:
            if len(self._tags) >= _MEMO_SIZE:
                self._tags.clear()
            kv = KeyValue(key=ADJUSTED_COUNT, value=attributes.to_any(adjusted))
            tag = self._tags[kind, adjusted] = kind(attributes=[kv]).SerializeToString()
        return tag
