"""Light data types shared by the processor, the policy and the engine. Importing this (and
``policy``) does not load Presidio or spaCy, so config validation and ``rules audit`` stay fast."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Action = Literal["mask", "partial", "hash", "token", "encrypt", "drop"]
KEYED_ACTIONS: frozenset[str] = frozenset({"hash", "token", "encrypt"})


@dataclass(frozen=True, slots=True)
class Finding:
    entity_type: str
    start: int
    end: int
    score: float
    rule: str  # recognizer and pattern, e.g. "PasswordValueRecognizer:secret_assignment"


Findings = tuple[Finding, ...]


class EntityRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Action = "mask"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class CustomPattern(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "pattern"
    regex: str
    score: float = Field(default=0.6, ge=0.0, le=1.0)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"regex does not compile: {e}") from None
        return value


class CustomRecognizerSpec(BaseModel):
    """A recognizer declared in YAML: regexes with scores and context words, and/or a deny-list."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    entity_type: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    patterns: list[CustomPattern] = Field(default_factory=list)
    deny_list: list[str] = Field(default_factory=list)
    deny_list_score: float = Field(default=0.9, ge=0.0, le=1.0)
    context: list[str] = Field(default_factory=list)
    # Added to a pattern's score when a context word occurs anywhere in the value (case-insensitive).
    context_boost: float = Field(default=0.3, ge=0.0, le=1.0)
