"""Every string location of a batch, as ``Slot``s grouped by their ``Owner``.

An owner is an item (span, log record, metric data point) or a container shared by items
(resource, scope). Failure handling and audit counts work per owner. Key policy is applied
here so allowed subtrees are never visited and blocked values are never scanned.

Locations: resource/scope attributes; span name, attributes, status message, event names
and attributes, link attributes; log body (string or structured) and attributes; metric
data-point and exemplar attributes. Maps and arrays are followed to their leaves; integer
leaves long enough to be a card number are scanned as text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableSequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.signals import Batch, Signal, iter_log_records, iter_metrics, iter_spans

DROP_MARK = "\x00errorgate:drop\x00"
MIN_INT_DIGITS = 13  # shortest card number


@dataclass
class Slot:
    key: str  # attribute key path ("user.email", "items[].card") or field ("span.name", "log.body")
    value: AnyValue | None  # attribute / body value (string or int leaf, or a blocked subtree)
    message: Any = None  # for plain string fields: the protobuf message holding it
    attr: str = ""  # ... and the field name on it
    free_text: bool = False
    blocked: bool = False  # replace whole value without scanning
    droppable: bool = False  # an attribute (not a name/body/array element): ``drop`` removes it
    peer_on_server: bool = False  # set on every slot of a SERVER span (IP policy)

    def text(self) -> str:
        if self.value is None:
            return str(getattr(self.message, self.attr))
        if self.value.WhichOneof("value") == "int_value":
            return str(self.value.int_value)
        return self.value.string_value

    def set_text(self, text: str) -> None:
        if self.value is None:
            setattr(self.message, self.attr, text)
        else:
            self.value.Clear()
            self.value.string_value = text


@dataclass
class Owner:
    kind: str  # "resource" | "scope" | "span" | "log" | "datapoint"
    message: Any  # the item (annotated with errorgate.redaction.*) or the container
    slots: list[Slot] = field(default_factory=list)
    shared: list[Owner] = field(default_factory=list)  # resource/scope owners this item lives in
    count: int = 0
    types: set[str] = field(default_factory=set)
    failed: bool = False


class Walker:
    def __init__(self, decide: Callable[[str], str], free_text_keys: frozenset[str]) -> None:
        self.decide = decide
        self.free_text_keys = free_text_keys

    def owners(self, batch: Batch) -> list[Owner]:
        """Owners in a stable order: shared containers before the items that reference them."""
        out: list[Owner] = []
        seen: dict[int, Owner] = {}

        def shared(kind: str, msg: Any, attrs: MutableSequence[KeyValue]) -> Owner:
            owner = seen.get(id(msg))
            if owner is None:
                owner = Owner(kind, msg, list(self._attrs(attrs)))
                seen[id(msg)] = owner
                out.append(owner)
            return owner

        if batch.signal is Signal.TRACES:
            for rs, ss, span in iter_spans(batch.request):  # type: ignore[arg-type]
                groups = [
                    shared("resource", rs, rs.resource.attributes),
                    shared("scope", ss, ss.scope.attributes),
                ]
                out.append(Owner("span", span, self._span(span), groups))
        elif batch.signal is Signal.LOGS:
            for rl, sl, record in iter_log_records(batch.request):  # type: ignore[arg-type]
                groups = [
                    shared("resource", rl, rl.resource.attributes),
                    shared("scope", sl, sl.scope.attributes),
                ]
                slots = list(self._attrs(record.attributes))
                if record.HasField("body"):
                    slots.extend(self._value("log.body", record.body, free_text=True, droppable=False))
                out.append(Owner("log", record, slots, groups))
        else:
            for rm, sm, metric in iter_metrics(batch.request):  # type: ignore[arg-type]
                groups = [
                    shared("resource", rm, rm.resource.attributes),
                    shared("scope", sm, sm.scope.attributes),
                ]
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    slots = list(self._attrs(point.attributes))
                    for ex in getattr(point, "exemplars", ()):
                        slots.extend(self._attrs(ex.filtered_attributes))
                    out.append(Owner("datapoint", point, slots, groups))
        return out

    def _span(self, span: Span) -> list[Slot]:
        server = span.kind == Span.SPAN_KIND_SERVER
        slots = [Slot("span.name", None, span, "name")]
        slots.extend(self._attrs(span.attributes))
        if span.status.message:
            slots.append(Slot("status.message", None, span.status, "message", free_text=True))
        for event in span.events:
            slots.append(Slot("event.name", None, event, "name"))
            slots.extend(self._attrs(event.attributes))
        for link in span.links:
            slots.extend(self._attrs(link.attributes))
        if server:
            for s in slots:
                s.peer_on_server = True
        return slots

    def _attrs(self, attrs: MutableSequence[KeyValue], prefix: str = "") -> Iterator[Slot]:
        for kv in attrs:
            yield from self._value(prefix + kv.key, kv.value, free_text=None, droppable=True)

    def _value(self, key: str, value: AnyValue, *, free_text: bool | None, droppable: bool) -> Iterator[Slot]:
        decision = self.decide(key) if key not in ("log.body",) else "scan"
        if decision == "allow":
            return
        if decision == "block":
            yield Slot(key, value, blocked=True, droppable=droppable)
            return
        kind = value.WhichOneof("value")
        if kind == "string_value":
            leaf = key.rsplit(".", 1)[-1] if "." in key else key
            is_free = (
                free_text
                if free_text is not None
                else (key in self.free_text_keys or leaf in self.free_text_keys)
            )
            yield Slot(key, value, free_text=is_free, droppable=droppable)
        elif kind == "int_value":
            if len(str(abs(value.int_value))) >= MIN_INT_DIGITS:
                yield Slot(key, value, droppable=droppable)
        elif kind == "kvlist_value":
            for kv in value.kvlist_value.values:
                sub = f"{kv.key}" if key == "log.body" else f"{key}.{kv.key}"
                yield from self._value(sub, kv.value, free_text=None, droppable=True)
        elif kind == "array_value":
            for item in value.array_value.values:
                yield from self._value(key, item, free_text=free_text, droppable=False)


def sweep_dropped(batch: Batch) -> None:
    """Remove attributes whose value was marked dropped (after all slots were processed, so
    removal never shifts a list another slot still points into)."""

    def clean(attrs: MutableSequence[KeyValue]) -> None:
        keep = [kv for kv in attrs if kv.value.string_value != DROP_MARK]
        for kv in keep:
            if kv.value.WhichOneof("value") == "kvlist_value":
                clean(kv.value.kvlist_value.values)
        if len(keep) != len(attrs):
            copies = [KeyValue(key=kv.key, value=kv.value) for kv in keep]
            del attrs[:]
            attrs.extend(copies)

    req: Any = batch.request
    if batch.signal is Signal.TRACES:
        for rs, ss, span in iter_spans(req):
            clean(rs.resource.attributes)
            clean(ss.scope.attributes)
            clean(span.attributes)
            for e in span.events:
                clean(e.attributes)
            for link in span.links:
                clean(link.attributes)
    elif batch.signal is Signal.LOGS:
        for rl, sl, record in iter_log_records(req):
            clean(rl.resource.attributes)
            clean(sl.scope.attributes)
            clean(record.attributes)
            if record.body.WhichOneof("value") == "kvlist_value":
                clean(record.body.kvlist_value.values)
    else:
        for rm, sm, metric in iter_metrics(req):
            clean(rm.resource.attributes)
            clean(sm.scope.attributes)
            kind = metric.WhichOneof("data")
            for point in getattr(metric, kind).data_points if kind else ():
                clean(point.attributes)
                for ex in getattr(point, "exemplars", ()):
                    clean(ex.filtered_attributes)
