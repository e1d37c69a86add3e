"""Every string location of a batch, as ``Slot``s grouped by their ``Owner``.

An owner is an item (span, log record, metric data point) or a container shared by items
(resource, scope). Failure handling and audit counts work per owner. Key policy is applied
here so allowed subtrees are never visited and blocked values are never scanned.

Locations: resource/scope attributes; span name, attributes, status message, event names
and attributes, link attributes; log body (string or structured) and attributes; metric
data-point and exemplar attributes. Maps and arrays are followed to their leaves; integer
leaves long enough to be a card number are scanned as text. Attribute and map *keys* that
could hold PII (an ``@``, a long digit run, an unusually long key) are scanned too: services
do build keys like ``feature_flag.<email>`` or maps keyed by card number.
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

_MIN_INT = 10 ** (MIN_INT_DIGITS - 1)
_KEY_DIGIT_RUN = 7  # shortest digit run that can be a phone number


def key_may_hold_pii(key: str) -> bool:
    """Cheap gate: ordinary attribute keys (``http.route``) never reach the recognizers."""
    if "@" in key or "%40" in key or len(key) > 64:
        return True
    run = 0
    for ch in key:
        if ch.isdigit():
            run += 1
            if run >= _KEY_DIGIT_RUN:
                return True
        elif ch not in " -.":
            run = 0
    return False


_NESTED = ("kvlist_value", "array_value")

Clean = Callable[[tuple[str, bool]], bool]


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
        self._keys: dict[str, tuple[str, bool]] = {}  # attribute key -> (decision, free text)
        self._suspect: dict[str, bool] = {}  # attribute key -> may hold PII itself

    def owners(self, batch: Batch, clean: Clean | None = None) -> list[Owner]:
        """Owners in a stable order: shared containers before the items that reference them.

        ``clean(text, free_text)`` true means the value is known to hold nothing: no slot is
        made for it, and an item left with no slot (in containers with none) gets no owner.
        Telemetry values repeat, so on steady traffic this skips almost every value."""
        out: list[Owner] = []
        req: Any = batch.request
        if batch.signal is Signal.TRACES:
            for rs in req.resource_spans:
                res = self._shared("resource", rs, rs.resource.attributes, out, clean)
                for ss in rs.scope_spans:
                    groups = [res, self._shared("scope", ss, ss.scope.attributes, out, clean)]
                    any_shared = bool(groups[0].slots or groups[1].slots)
                    for span in ss.spans:
                        slots = self._span(span, clean)
                        if slots or any_shared or clean is None:
                            out.append(Owner("span", span, slots, groups))
        elif batch.signal is Signal.LOGS:
            for rl in req.resource_logs:
                res = self._shared("resource", rl, rl.resource.attributes, out, clean)
                for sl in rl.scope_logs:
                    groups = [res, self._shared("scope", sl, sl.scope.attributes, out, clean)]
                    any_shared = bool(groups[0].slots or groups[1].slots)
                    for record in sl.log_records:
                        slots = self._attrs(record.attributes, [], clean)
                        if record.HasField("body"):
                            slots.extend(
                                self._value("log.body", record.body, clean, free_text=True, droppable=False)
                            )
                        if slots or any_shared or clean is None:
                            out.append(Owner("log", record, slots, groups))
        else:
            for rm in req.resource_metrics:
                res = self._shared("resource", rm, rm.resource.attributes, out, clean)
                for sm in rm.scope_metrics:
                    groups = [res, self._shared("scope", sm, sm.scope.attributes, out, clean)]
                    any_shared = bool(groups[0].slots or groups[1].slots)
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        if kind is None:
                            continue
                        for point in getattr(metric, kind).data_points:
                            slots = self._attrs(point.attributes, [], clean)
                            for ex in getattr(point, "exemplars", ()):
                                self._attrs(ex.filtered_attributes, slots, clean)
                            if slots or any_shared or clean is None:
                                out.append(Owner("datapoint", point, slots, groups))
        return out

    def all_slots(self, owner: Owner) -> list[Slot]:
        """Every slot of an owner, known-clean values included (failing closed masks them all)."""
        msg = owner.message
        if owner.kind == "resource":
            return self._attrs(msg.resource.attributes, [], None)
        if owner.kind == "scope":
            return self._attrs(msg.scope.attributes, [], None)
        if owner.kind == "span":
            return self._span(msg, None)
        slots = self._attrs(msg.attributes, [], None)
        if owner.kind == "log":
            if msg.HasField("body"):
                slots.extend(self._value("log.body", msg.body, None, free_text=True, droppable=False))
        else:
            for ex in getattr(msg, "exemplars", ()):
                self._attrs(ex.filtered_attributes, slots, None)
        return slots

    def _shared(
        self, kind: str, msg: Any, attrs: MutableSequence[KeyValue], out: list[Owner], clean: Clean | None
    ) -> Owner:
        owner = Owner(kind, msg, self._attrs(attrs, [], clean))
        out.append(owner)
        return owner

    def _span(self, span: Span, clean: Clean | None) -> list[Slot]:
        slots: list[Slot] = []
        if clean is None or not clean((span.name, False)):
            slots.append(Slot("span.name", None, span, "name"))
        self._attrs(span.attributes, slots, clean)
        if span.status.message and (clean is None or not clean((span.status.message, True))):
            slots.append(Slot("status.message", None, span.status, "message", free_text=True))
        for event in span.events:
            if clean is None or not clean((event.name, False)):
                slots.append(Slot("event.name", None, event, "name"))
            self._attrs(event.attributes, slots, clean)
        for link in span.links:
            self._attrs(link.attributes, slots, clean)
        if slots and span.kind == Span.SPAN_KIND_SERVER:
            for s in slots:
                s.peer_on_server = True
        return slots

    def _key(self, key: str) -> tuple[str, bool]:
        found = self._keys.get(key)
        if found is None:
            leaf = key.rsplit(".", 1)[-1] if "." in key else key
            found = (self.decide(key), key in self.free_text_keys or leaf in self.free_text_keys)
            if len(self._keys) < 100_000:
                self._keys[key] = found
        return found

    def _key_slot(self, kv: KeyValue, clean: Clean | None) -> Slot | None:
        key = kv.key
        suspect = self._suspect.get(key)
        if suspect is None:
            suspect = key_may_hold_pii(key)
            if len(self._suspect) < 100_000:
                self._suspect[key] = suspect
        if not suspect or (clean is not None and clean((key, False))):
            return None
        return Slot(f"{key}#key", None, kv, "key")

    def _attrs(self, attrs: MutableSequence[KeyValue], out: list[Slot], clean: Clean | None) -> list[Slot]:
        # The common case (a string attribute) inline; everything else through ``_value``.
        known = self._keys
        for kv in attrs:
            key = kv.key
            decision, is_free = known.get(key) or self._key(key)
            if decision == "allow":
                continue
            key_slot = self._key_slot(kv, clean)
            if key_slot is not None:
                out.append(key_slot)
            value = kv.value
            if decision == "scan":
                kind = value.WhichOneof("value")
                if kind == "string_value":
                    if clean is None or not clean((value.string_value, is_free)):
                        out.append(Slot(key, value, free_text=is_free, droppable=True))
                    continue
                if kind not in _NESTED and (kind != "int_value" or abs(value.int_value) < _MIN_INT):
                    continue  # bools, doubles, bytes, short integers: nothing to find
            out.extend(self._value(key, value, clean, free_text=None, droppable=True))
        return out

    def _value(
        self, key: str, value: AnyValue, clean: Clean | None, *, free_text: bool | None, droppable: bool
    ) -> Iterator[Slot]:
        if key == "log.body":
            decision, key_free = "scan", False
        else:
            decision, key_free = self._key(key)
        if decision == "allow":
            return
        if decision == "block":
            yield Slot(key, value, blocked=True, droppable=droppable)
            return
        kind = value.WhichOneof("value")
        if kind == "string_value":
            is_free = free_text if free_text is not None else key_free
            if clean is None or not clean((value.string_value, is_free)):
                yield Slot(key, value, free_text=is_free, droppable=droppable)
        elif kind == "int_value":
            if len(str(abs(value.int_value))) >= MIN_INT_DIGITS and (
                clean is None or not clean((str(value.int_value), False))
            ):
                yield Slot(key, value, droppable=droppable)
        elif kind == "kvlist_value":
            for kv in value.kvlist_value.values:
                key_slot = self._key_slot(kv, clean)
                if key_slot is not None:
                    yield key_slot
                sub = f"{kv.key}" if key == "log.body" else f"{key}.{kv.key}"
                yield from self._value(sub, kv.value, clean, free_text=None, droppable=True)
        elif kind == "array_value":
            for item in value.array_value.values:
                yield from self._value(key, item, clean, free_text=free_text, droppable=False)


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
