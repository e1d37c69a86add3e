"""What the policy would do to a batch, finding by finding (for ``errorgate rules test``).
Read-only: the batch is not changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from errorgate.processors.redaction.actions import BLOCKED_MASK, FAILED_MASK, Where
from errorgate.signals import Batch

if TYPE_CHECKING:
    from errorgate.processors.redact import RedactProcessor


@dataclass(frozen=True)
class Explanation:
    item: int  # index of the span / log record / data point in the batch (shared containers: -1)
    part: str  # resource, scope, span, log, datapoint
    location: str  # attribute key path or field (span.name, log.body, status.message...)
    entity_type: str
    rule: str
    score: float | None  # None for blocked keys (not scanned)
    original: str
    replacement: str


def shape(value: str, limit: int = 40) -> str:
    """A value's outline without its content: letters become x/X, digits 9."""
    out = "".join(
        "X" if c.isupper() else "x" if c.isalpha() else "9" if c.isdigit() else c for c in value[:limit]
    )
    return out + ("…" if len(value) > limit else "")


def explain(processor: RedactProcessor, batch: Batch) -> list[Explanation]:
    owners = processor.walker.owners(batch)
    keys = [(s.text(), s.free_text) for o in owners for s in o.slots if not s.blocked]
    results = processor.detector.detect(keys) if keys else {}
    rows: list[Explanation] = []
    item = -1
    services = processor._services(owners)
    for owner in owners:
        shared = owner.kind in ("resource", "scope")
        if not shared:
            item += 1
        index = -1 if shared else item
        for slot in owner.slots:
            text = slot.text()
            if slot.blocked:
                rows.append(
                    Explanation(
                        index, owner.kind, slot.key, "BLOCKED_KEY", "block_keys", None, text, BLOCKED_MASK
                    )
                )
                continue
            findings = results.get((text, slot.free_text))
            if findings is None:
                rows.append(
                    Explanation(index, owner.kind, slot.key, "FAILED", "analysis", None, text, FAILED_MASK)
                )
                continue
            where = Where(slot.key, batch.signal.value, batch.tenant, services.get(id(owner), ""))
            for f in processor._ip_filter(slot, findings):
                value = text[f.start : f.end]
                action = processor.replacer.action(f.entity_type)
                if action == "drop" and slot.droppable:
                    replacement = "(attribute dropped)"
                else:
                    replacement = processor.replacer.replace(
                        value, f.entity_type, "mask" if action == "drop" else action, where
                    )
                rows.append(
                    Explanation(
                        index, owner.kind, slot.key, f.entity_type, f.rule, f.score, value, replacement
                    )
                )
    return rows
