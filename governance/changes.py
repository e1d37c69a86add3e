"""The plan of an idempotent push to an outside system (``errorgate grafana push``,
``errorgate oncall sync``): each object read, compared and written only when it differs, and
one line that sums up what was (or, with ``--dry-run``, would be) written."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Change:
    kind: str  # the object's kind in the target system: "dashboard", "schedule", "escalation policy"...
    name: str
    action: str  # "create", "update", "delete" or "unchanged"
    diff: str = ""


@dataclass
class ChangeSet:
    changes: list[Change] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def summary(self) -> str:
        if not self.changed:
            return f"no changes ({len(self.changes)} objects up to date)"
        counts: dict[str, int] = {}
        for c in self.changed:
            counts[c.action] = counts.get(c.action, 0) + 1
        detail = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
        verb = "would change" if self.dry_run else "changed"
        return f"{verb} {len(self.changed)} of {len(self.changes)} objects ({detail})"
