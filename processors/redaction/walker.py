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

Spans and log records whose content was already walked without finding a slot are skipped
whole (``memo``), and so are those whose content was already redacted (``Owner.replay``: the
processor puts the remembered result in place); containers and items get ``Owner`` objects only
when something needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableSequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.processors.redaction.keyhints import KeyHint, hint_for
from errorgate.processors.redaction.memo import (
    CleanItems,
    Redacted,
    RedactedItems,
    log_signature,
    span_signature,
)
from errorgate.processors.redaction.signatures import batch_signatures
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
    known: str | None = None  # the current text, when the walker already read it
    hint: KeyHint | None = None  # the key says what the value is (``customer.phone``)

    def text(self) -> str:
        if self.known is not None:
            return self.known
        if self.value is None:
            return str(getattr(self.message, self.attr))
        if self.value.WhichOneof("value") == "int_value":
            return str(self.value.int_value)
        return self.value.string_value

    def set_text(self, text: str) -> None:
        self.known = text
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
    found: list[tuple[str, str]] = field(default_factory=list)  # (entity type, rule) per redaction
    replay: Redacted | None = None  # content already redacted once: no slots, put this in place
    signature: bytes | None = None  # walked with slots: remember the result under this signature


# What the item memo knows of an item besides its slots: its remembered redaction, or the
# signature to remember the redaction about to be done under.
Known = Redacted | bytes | None


def _owner(kind: str, message: Any, slots: list[Slot], shared: list[Owner], known: Known) -> Owner:
    owner = Owner(kind, message, slots, shared)
    if known is not None:
        if known.__class__ is bytes:
            owner.signature = known  # type: ignore[assignment]
        else:
            owner.replay = known  # type: ignore[assignment]
    return owner


class _Resource:
    """A resource's owner and its scopes' owners, made when first needed: when they have slots,
    or an item in them gets an owner (items reach their containers through ``Owner.shared``).
    Most containers and most of their items have nothing to redact: no owner objects at all."""

    __slots__ = ("msg", "out", "owner", "slots")

    def __init__(self, out: list[Owner], msg: Any, slots: list[Slot]) -> None:
        self.out = out
        self.msg = msg
        self.slots = slots
        self.owner: Owner | None = None
        if slots:  # redacted even if no scope needs it
            self._own()

    def _own(self) -> Owner:
        if self.owner is None:
            self.owner = Owner("resource", self.msg, self.slots)
            self.out.append(self.owner)
        return self.owner

    def groups(self, scope_msg: Any, scope_slots: list[Slot]) -> list[Owner]:
        """The ``shared`` list of the scope's items (the scope's owner is made here, once:
        callers keep the list)."""
        resource = self._own()
        scope = Owner("scope", scope_msg, scope_slots)
        self.out.append(scope)
        return [resource, scope]


_MAX_KEYS = 100_000
_MAX_KEY_CHARS = 8 * 1024 * 1024  # ~8 MiB of key text, besides ~200 bytes a key for the entries


class Walker:
    def __init__(
        self,
        decide: Callable[[str], str],
        free_text_keys: frozenset[str],
        memo_size: int = 16_384,
        replay: bool = False,
    ) -> None:
        self.decide = decide
        self.memo = CleanItems(memo_size)
        # Items already redacted, by content: only for a processor whose rewrites depend on the
        # values alone (see ``memo.RedactedItems``).
        self.redacted: RedactedItems | None = RedactedItems(memo_size) if replay and memo_size else None
        self.free_text_keys = free_text_keys
        # attribute key -> (decision, free text, may hold PII itself)
        self._keys: dict[str, tuple[str, bool, bool]] = {}
        self._hints: dict[str, KeyHint] = {}
        self._allowed: set[str] = set()  # keys decided "allow": one set lookup skips them
        # Characters of the keys memoised: keys are as long as validation lets strings be, so
        # the count alone allowed gigabytes of hostile keys. Past either bound keys are decided
        # afresh each time (as before past the count), so nothing is ever evicted.
        self._key_chars = 0

    def owners(self, batch: Batch, clean: Clean | None = None, wire: bytes | None = None) -> list[Owner]:
        """Owners in a stable order: shared containers before the items that reference them.

        ``clean(text, free_text)`` true means the value is known to hold nothing: no slot is
        made for it, and an item left with no slot (in containers with none) gets no owner.
        Telemetry values repeat, so on steady traffic this skips almost every value.
        ``wire``: the request's current bytes if at hand (``signatures.batch_signatures``)."""
        out: list[Owner] = []
        req: Any = batch.request
        # Spans and log records: whole-item memo (see ``memo``), unless paused or without ``clean``.
        memo = clean is not None and self.memo.active()
        paused = clean is not None and not memo
        # The memo's signatures, all at once from the bytes where possible; an entry or the
        # whole list None: computed per item. The zips below take one entry per item (the shared
        # iterator is not strict: it runs on across scopes).
        found = batch_signatures(batch, wire) if memo else None
        signatures: Iterator[bytes | None] = iter(found) if found is not None else repeat(None)
        if batch.signal is Signal.TRACES:
            for rs in req.resource_spans:
                res = _Resource(out, rs, self._attrs(rs.resource.attributes, [], clean))
                for ss in rs.scope_spans:
                    scope_slots = self._attrs(ss.scope.attributes, [], clean)
                    every = bool(res.slots or scope_slots) or clean is None  # every item an owner
                    groups = res.groups(ss, scope_slots) if every else None
                    if paused:
                        self.memo.skip(len(ss.spans))
                    for span, sig in zip(ss.spans, signatures, strict=False):
                        if memo:
                            slots, known = self._span_memo(span, clean, sig)
                        else:
                            slots, known = self._span(span, clean), None
                        if slots or every or known is not None:
                            groups = groups or res.groups(ss, scope_slots)
                            out.append(_owner("span", span, slots, groups, known))
        elif batch.signal is Signal.LOGS:
            for rl in req.resource_logs:
                res = _Resource(out, rl, self._attrs(rl.resource.attributes, [], clean))
                for sl in rl.scope_logs:
                    scope_slots = self._attrs(sl.scope.attributes, [], clean)
                    every = bool(res.slots or scope_slots) or clean is None
                    groups = res.groups(sl, scope_slots) if every else None
                    if paused:
                        self.memo.skip(len(sl.log_records))
                    for record, sig in zip(sl.log_records, signatures, strict=False):
                        if memo:
                            slots, known = self._log_memo(record, clean, sig)
                        else:
                            slots, known = self._log(record, clean), None
                        if slots or every or known is not None:
                            groups = groups or res.groups(sl, scope_slots)
                            out.append(_owner("log", record, slots, groups, known))
        else:
            for rm in req.resource_metrics:
                res = _Resource(out, rm, self._attrs(rm.resource.attributes, [], clean))
                for sm in rm.scope_metrics:
                    scope_slots = self._attrs(sm.scope.attributes, [], clean)
                    every = bool(res.slots or scope_slots) or clean is None
                    groups = res.groups(sm, scope_slots) if every else None
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        if kind is None:
                            continue
                        exemplars = kind != "summary"  # the only point type without exemplars
                        for point in getattr(metric, kind).data_points:
                            slots = self._attrs(point.attributes, [], clean)
                            if exemplars:
                                for ex in point.exemplars:
                                    self._attrs(ex.filtered_attributes, slots, clean)
                            if slots or every:
                                groups = groups or res.groups(sm, scope_slots)
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
        if owner.kind == "log":
            return self._log(msg, None)
        slots = self._attrs(msg.attributes, [], None)
        for ex in getattr(msg, "exemplars", ()):
            self._attrs(ex.filtered_attributes, slots, None)
        return slots

    def _log(self, record: LogRecord, clean: Clean | None) -> list[Slot]:
        slots = self._attrs(record.attributes, [], clean)
        if record.HasField("body"):
            self._body(record.body, slots, clean)
        return slots

    def _log_memo(
        self, record: LogRecord, clean: Clean | None, signature: bytes | None
    ) -> tuple[list[Slot], Known]:
        if signature is None:
            signature = log_signature(record)
        if self.memo.hit(signature):
            return [], None
        redacted = self.redacted
        if redacted is not None:
            found = redacted.get(signature)
            if found is not None:
                self.memo.count_hit()
                return [], found
        slots = self._log(record, clean)
        if not slots:
            self.memo.add(signature)
            return [], None
        return slots, signature if redacted is not None else None

    def _span_memo(
        self, span: Span, clean: Clean | None, signature: bytes | None
    ) -> tuple[list[Slot], Known]:
        # A native signature is only ever given for a span without events and links.
        plain = signature is not None
        if signature is None:
            signature = span_signature(span)
        if self.memo.hit(signature):
            return [], None
        # ``memo.replay`` restores top-level ids and times: not spans with events or links.
        redacted = self.redacted if plain or not (len(span.events) or len(span.links)) else None
        if redacted is not None:
            found = redacted.get(signature)
            if found is not None:
                self.memo.count_hit()
                return [], found
        slots = self._span(span, clean)
        if not slots:
            self.memo.add(signature)
            return [], None
        return slots, signature if redacted is not None else None

    def _body(self, body: AnyValue, out: list[Slot], clean: Clean | None) -> None:
        text = body.string_value  # non-empty: a string body (most logs), handled inline
        if text and clean is not None:
            if not clean((text, True)):
                out.append(Slot("log.body", body, free_text=True, droppable=False, known=text))
            return
        out.extend(self._value("log.body", body, clean, free_text=True, droppable=False))

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

    def _key(self, key: str) -> tuple[str, bool, bool]:
        """(decision, free text, the key itself may hold PII), memoised per key."""
        found = self._keys.get(key)
        if found is None:
            leaf = key.rsplit(".", 1)[-1] if "." in key else key
            is_free = key in self.free_text_keys or leaf in self.free_text_keys
            decision = self.decide(key)
            hint = hint_for(key) if decision == "scan" else None
            if hint is not None:
                # Never skipped as known clean: "Linda Thompson" is clean text but not under
                # ``customer.name``. Bounded like the key memo (hints are few and keys repeat).
                decision = "hint"
                if len(self._hints) < _MAX_KEYS:
                    self._hints[key] = hint
            found = (decision, is_free, key_may_hold_pii(key))
            if len(self._keys) < _MAX_KEYS and self._key_chars + len(key) <= _MAX_KEY_CHARS:
                self._key_chars += len(key)
                self._keys[key] = found
                if found[0] == "allow":
                    self._allowed.add(key)
        return found

    @staticmethod
    def _key_slot(kv: KeyValue, clean: Clean | None) -> Slot | None:
        """A slot for a suspect key (the caller checked ``key_may_hold_pii``), unless known clean."""
        key = kv.key
        if clean is not None and clean((key, False)):
            return None
        return Slot(f"{key}#key", None, kv, "key")

    def _attrs(self, attrs: MutableSequence[KeyValue], out: list[Slot], clean: Clean | None) -> list[Slot]:
        # Runs for every attribute of every item: the common cases (an allowed key, a non-empty
        # string value under an ordinary key) inline; everything else through ``_value``.
        known = self._keys
        allowed = self._allowed
        for kv in attrs:
            key = kv.key
            if key in allowed:
                continue
            decision, is_free, suspect = known.get(key) or self._key(key)
            if decision == "allow":
                continue
            if suspect:
                key_slot = self._key_slot(kv, clean)
                if key_slot is not None:
                    out.append(key_slot)
            value = kv.value
            if decision == "scan":
                # A non-empty ``string_value`` means the value is a string; an empty one may be
                # any other kind (or an empty string) and is sorted out below.
                text = value.string_value
                if text:
                    if clean is None or not clean((text, is_free)):
                        out.append(Slot(key, value, free_text=is_free, droppable=True, known=text))
                    continue
                kind = value.WhichOneof("value")
                if kind == "string_value":
                    if clean is None or not clean((text, is_free)):
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
            decision, key_free, _ = self._key(key)
        if decision == "allow":
            return
        if decision == "block":
            yield Slot(key, value, blocked=True, droppable=droppable)
            return
        kind = value.WhichOneof("value")
        if decision == "hint" and kind == "string_value":
            hint = self._hints.get(key) or hint_for(key)
            yield Slot(key, value, free_text=key_free, droppable=droppable, hint=hint)
            return
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
                key_slot = self._key_slot(kv, clean) if self._key(kv.key)[2] else None
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
