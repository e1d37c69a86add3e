"""The reviewer check of a postmortem's text: blame wording (a small lexicon, each entry with why
it is flagged) and personal names (the redact processor's own detection, PERSON entities).

Names come from the redact processor's detection (``redact_person_spans`` in the incidents
command). Findings carry positions (line, column, length), never the matched name: a name found in a
postmortem must not travel on into logs, the timeline or the CLI's output. Blame terms are
lexicon entries, not personal data, so they are shown."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

# (pattern, term shown, why it is flagged). Blameless postmortems ask what made an action
# reasonable at the time and what the system allowed, so wording that ends the inquiry at a
# person is flagged for a reviewer (not rejected: a quote or a negation can be fine).
BLAME: tuple[tuple[str, str, str], ...] = (
    (
        r"\bfault of\b",
        "fault of",
        "assigns fault to someone; describe the conditions that allowed the failure",
    ),
    (
        r"\bcareless(?:ly|ness)?\b",
        "careless",
        "judges a person's diligence; ask what made the slip easy to make",
    ),
    (r"\bshould have known\b", "should have known", "hindsight bias: what was knowable at the time?"),
    (r"\bhuman error\b", "human error", "stops at a person; find the system factors behind the action"),
    (r"\bnegligen(?:t|ce)\b", "negligent", "a moral or legal judgement of a person, not a cause"),
    (r"\bblam(?:e|ed|es|ing)\b", "blame", "names someone to blame instead of contributing factors"),
    (r"\bincompeten(?:t|ce)\b", "incompetent", "judges a person's ability; look at training, tooling, load"),
    (r"\b(?:his|her|their) (?:mistake|fault)\b", "his/her mistake", "attributes the failure to one person"),
    (
        r"\b(?:screwed|messed) up\b",
        "screwed up",
        "judgemental wording; state what happened and why it made sense",
    ),
    (
        r"\bfailed to follow\b",
        "failed to follow",
        "blames the person; ask why the procedure was hard to follow",
    ),
)
_BLAME = [(re.compile(p, re.IGNORECASE), term, why) for p, term, why in BLAME]
# Tools every postmortem mentions that name lists also hold as given names ("Jira"): never a person.
NOT_NAMES = frozenset(
    {"jira", "alertmanager", "grafana", "pagerduty", "opsgenie", "slack", "prometheus", "errorgate"}
)
PERSON_WHY = "a personal name: a blameless postmortem names roles and systems, not people"


@dataclass(frozen=True)
class Finding:
    kind: str  # "blame" or "person"
    line: int  # 1-based
    column: int  # 1-based
    length: int
    term: str | None  # the lexicon term for blame wording; never the text of a name
    why: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        what = f"blame wording '{self.term}'" if self.kind == "blame" else "personal name"
        return f"{what} at {self.line}:{self.column}"


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


Spans = Callable[[str], list[tuple[int, int]]]


class Reviewer:
    """Blame wording and personal names in a postmortem's text, in text order.

    ``names`` builds the PERSON span finder on first use (the command layer hands in the redact
    processor's detection: the incident engine, being core, does not import a component)."""

    def __init__(self, names: Callable[[], Spans]) -> None:
        self._names = names
        self._spans: Spans | None = None
        self._lock = threading.Lock()

    def _person_spans(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            if self._spans is None:
                self._spans = self._names()
        return self._spans(text)

    def check(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        for pattern, term, why in _BLAME:
            for m in pattern.finditer(text):
                out.append(Finding("blame", *_position(text, m.start()), m.end() - m.start(), term, why))
        for start, end in self._person_spans(text):
            if text[start:end].lower() in NOT_NAMES:
                continue
            out.append(Finding("person", *_position(text, start), end - start, None, PERSON_WHY))
        return sorted(out, key=lambda f: (f.line, f.column, f.kind))


def summary(findings: list[Finding], limit: int = 5) -> str:
    """One line for the timeline: counts and positions, no names."""
    shown = "; ".join(f.describe() for f in findings[:limit])
    more = f"; {len(findings) - limit} more" if len(findings) > limit else ""
    return (
        f"reviewer check: {len(findings)} finding(s): {shown}{more}" if findings else "reviewer check: clean"
    )
