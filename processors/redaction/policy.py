"""Packs and the effective policy: which recognizers run, thresholds and actions per entity
type, and the key policy (allowed keys never scanned, blocked keys replaced unscanned).

Packs live in ``governance/redaction/<name>.yaml``; a pack reference may also be a path.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from errorgate.processors.redaction.recognizers.registry import RECOGNIZER_ENTITIES
from errorgate.processors.redaction.specs import KEYED_ACTIONS, Action, CustomRecognizerSpec, EntityRule

__all__ = [
    "KEYED_ACTIONS",
    "Action",
    "EntityRule",
    "KeyPolicy",
    "Pack",
    "Policy",
    "PolicyError",
    "build_policy",
]
PACK_DIR = Path(__file__).resolve().parent.parent.parent / "governance" / "redaction"

# Identifiers and schema fields of telemetry: never PII, and scanning them only produces noise
# (the URL and IP patterns fire on ``service.name`` and ``service.version``).
DEFAULT_ALLOW_KEYS: tuple[str, ...] = (
    "service.name",
    "service.namespace",
    "service.version",
    "service.instance.id",
    "telemetry.sdk.*",
    "telemetry.distro.*",
    "otel.*",
    # errorgate's own annotations are PII-free by construction — except the error template, which
    # classify derives from the raw message before redaction runs, so it is scanned (as free text).
    "errorgate.error.fingerprint",
    "errorgate.error.kind",
    "errorgate.error.origin",
    "errorgate.error.origin_service",
    "errorgate.error.domain",
    "errorgate.error.category",
    "errorgate.error.component",
    "errorgate.itil.*",
    "errorgate.severity",
    "errorgate.incident.id",
    "errorgate.sampling.*",
    "errorgate.redaction.*",
    "errorgate.retention.*",
    "errorgate.legal_hold",
    "deployment.environment*",
    "http.route",
    "url.template",
    "http.request.method",
    "http.response.status_code",
    "http.status_code",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "db.system*",
    "db.operation*",
    "messaging.system",
    "messaging.operation*",
    "trace_id",
    "span_id",
    "*.trace_id",
    "*.span_id",
    "traceid",
    "spanid",
    "host.name",
    "host.id",
    "host.arch",
    "host.ip",
    "net.host.ip",
    "net.host.name",
    "server.address",
    "server.port",
    "os.*",
    "process.runtime.*",
    "process.pid",
    "k8s.*",
    "container.*",
    "cloud.*",
    "code.*",
    "exception.type",
    "error.type",
    "thread.*",
)


class Pack(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    regimes: list[str] = Field(default_factory=list)
    requires: dict[str, list[str]] = Field(default_factory=dict)
    recognizers: list[str] = Field(default_factory=list)
    entities: dict[str, EntityRule] = Field(default_factory=dict)
    allow_keys: list[str] = Field(default_factory=list)
    block_keys: list[str] = Field(default_factory=list)
    custom_recognizers: list[CustomRecognizerSpec] = Field(default_factory=list)
    source: str = ""

    @field_validator("recognizers")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in RECOGNIZER_ENTITIES]
        if unknown:
            raise ValueError(f"unknown recognizer(s) {unknown}; known: {sorted(RECOGNIZER_ENTITIES)}")
        return value


class PolicyError(ValueError):
    """A pack or policy setting is wrong; the message names the pack file or key."""


def available_packs() -> list[str]:
    return sorted(p.stem for p in PACK_DIR.glob("*.yaml"))


def load_pack(ref: str) -> Pack:
    path = Path(ref) if ref.endswith((".yaml", ".yml")) or "/" in ref else PACK_DIR / f"{ref}.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        raise PolicyError(
            f"packs: {ref!r} not found (built-in packs: {', '.join(available_packs())})"
        ) from None
    except yaml.YAMLError as e:
        raise PolicyError(f"packs: {path} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"packs: {path} must be a mapping")
    try:
        return Pack.model_validate({**raw, "source": str(path)})
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise PolicyError(f"packs: {path}: {where}") from None


def compile_patterns(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns))


class KeyPolicy:
    """Decides per attribute key: ``allow`` (never scanned), ``block`` (value replaced unscanned)
    or ``scan``. Allow wins over block so an explicit allow can carve out an exception.
    Keys are few and repeat, so decisions are memoised."""

    def __init__(self, allow: list[str], block: list[str]) -> None:
        self.allow = list(allow)
        self.block = list(block)
        self._allow = compile_patterns(self.allow)
        self._block = compile_patterns(self.block)
        self._memo: dict[str, str] = {}
        self._lock = threading.Lock()

    def decide(self, key: str) -> str:
        found = self._memo.get(key)
        if found is not None:
            return found
        lower = key.lower()
        if self._allow is not None and self._allow.match(lower):
            decision = "allow"
        elif self._block is not None and self._block.match(lower):
            decision = "block"
        else:
            decision = "scan"
        with self._lock:
            if len(self._memo) < 100_000:
                self._memo[key] = decision
        return decision


class Policy(BaseModel):
    """The merged, effective policy (packs in order, then the processor's own settings)."""

    model_config = ConfigDict(extra="forbid")
    packs: list[Pack]
    recognizers: list[str]
    entities: dict[str, EntityRule]
    allow_keys: list[str]
    block_keys: list[str]
    custom_recognizers: list[CustomRecognizerSpec]
    score_threshold: float

    def action_for(self, entity_type: str) -> Action:
        rule = self.entities.get(entity_type)
        return rule.action if rule else "mask"

    def thresholds(self) -> dict[str, float]:
        return {k: v.threshold for k, v in self.entities.items() if v.threshold is not None}

    def covered_entities(self) -> set[str]:
        covered: set[str] = set()
        for name in self.recognizers:
            covered.update(RECOGNIZER_ENTITIES[name])
        covered.update(c.entity_type for c in self.custom_recognizers)
        return covered

    def gaps(self) -> dict[str, list[str]]:
        """Regime -> entity types it requires that no active recognizer detects."""
        covered = self.covered_entities()
        out: dict[str, list[str]] = {}
        for pack in self.packs:
            for regime, needed in pack.requires.items():
                missing = sorted(set(needed) - covered)
                out.setdefault(regime, [])
                out[regime] = sorted(set(out[regime]) | set(missing))
        return out


def build_policy(
    pack_refs: list[str],
    *,
    entities: dict[str, EntityRule] | None = None,
    allow_keys: list[str] | None = None,
    block_keys: list[str] | None = None,
    custom_recognizers: list[CustomRecognizerSpec] | None = None,
    disable_recognizers: list[str] | None = None,
    score_threshold: float = 0.5,
    default_allow_keys: bool = True,
) -> Policy:
    packs = [load_pack(ref) for ref in pack_refs]
    recognizers: list[str] = []
    merged_entities: dict[str, EntityRule] = {}
    allow = list(DEFAULT_ALLOW_KEYS) if default_allow_keys else []
    block: list[str] = []
    custom: list[CustomRecognizerSpec] = []
    for pack in packs:
        recognizers.extend(r for r in pack.recognizers if r not in recognizers)
        merged_entities.update(pack.entities)
        allow.extend(pack.allow_keys)
        block.extend(pack.block_keys)
        custom.extend(pack.custom_recognizers)
    disabled = set(disable_recognizers or [])
    unknown = disabled - set(RECOGNIZER_ENTITIES) - {c.name for c in custom}
    if unknown:
        raise PolicyError(f"disable_recognizers: unknown recognizer(s) {sorted(unknown)}")
    recognizers = [r for r in recognizers if r not in disabled]
    custom = [c for c in custom if c.name not in disabled]
    merged_entities.update(entities or {})
    custom.extend(custom_recognizers or [])
    return Policy(
        packs=packs,
        recognizers=recognizers,
        entities=merged_entities,
        allow_keys=allow + list(allow_keys or []),
        block_keys=block + list(block_keys or []),
        custom_recognizers=custom,
        score_threshold=score_threshold,
    )
