"""Decrypt access policy (``governance/access.yaml``): roles -> services and attribute keys.

The policy's sha256 (of the file bytes) goes into every audit entry, so an access review
can tell which version of the policy allowed or refused an attempt.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from errorgate.governance.yamlfile import load_model

POLICY_ENV = "ERRORGATE_ACCESS_POLICY"


class AccessPolicyError(ValueError):
    """A problem in the access policy file; the message names the file and key path."""


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    services: list[str] = Field(default_factory=list, description="globs on service.name")
    keys: list[str] = Field(default_factory=list, description="globs on attribute keys; log.body for bodies")


class AccessPolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_reason_length: int = Field(default=10, ge=1)
    roles: dict[str, Role] = Field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    detail: str  # one line, PII-free: why it was allowed or refused


@dataclass(frozen=True)
class AccessPolicy:
    model: AccessPolicyModel
    source: str
    sha256: str

    def role(self, name: str) -> Role | None:
        return self.model.roles.get(name)

    def check_reason(self, reason: str) -> Decision:
        if len(reason.strip()) < self.model.min_reason_length:
            return Decision(
                False,
                f"reason too short: at least {self.model.min_reason_length} characters "
                "(e.g. a ticket id and the purpose)",
            )
        return Decision(True, "reason given")

    def decide(self, role_name: str, *, service: str, key: str) -> Decision:
        role = self.role(role_name)
        if role is None:
            known = ", ".join(sorted(self.model.roles)) or "none"
            return Decision(False, f"unknown role {role_name!r} (roles in {self.source}: {known})")
        if not any(fnmatchcase(service, pattern) for pattern in role.services):
            return Decision(False, f"role {role_name} may not decrypt values of service {service!r}")
        if not any(fnmatchcase(key, pattern) for pattern in role.keys):
            return Decision(False, f"role {role_name} may not decrypt attribute {key!r}")
        return Decision(True, f"role {role_name} may decrypt {key!r} of {service!r}")


def load_access_policy(path: str | Path | None = None) -> AccessPolicy:
    """``path``, else ``$ERRORGATE_ACCESS_POLICY``, else the bundled ``governance/access.yaml``."""
    if path is None:
        path = os.environ.get(POLICY_ENV) or None
    model, source, data = load_model(
        path, "access.yaml", AccessPolicyModel, AccessPolicyError, "access policy"
    )
    return AccessPolicy(model=model, source=source, sha256=hashlib.sha256(data).hexdigest())
