"""Decrypt access policy (``governance/access.yaml``): who holds which role, and roles ->
services and attribute keys.

A role is held by the users and groups it lists (OS accounts, or ``oidc:``-prefixed subjects
and groups of a verified ID token); ``--role`` only selects among the roles an identity holds.
The file itself is trusted only when it is owned by root or the service user (the owner of
the keyring directory) and nobody else can write it -- the same check for the bundled file,
``--policy`` and ``$ERRORGATE_ACCESS_POLICY``.

The policy's sha256 (of the file bytes) goes into every audit entry, and a change of it is an
audited event of its own, so an access review can tell which policy allowed or refused what.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from errorgate.governance.identity import Identity, OidcSettings
from errorgate.governance.yamlfile import load_model

POLICY_ENV = "ERRORGATE_ACCESS_POLICY"


class AccessPolicyError(ValueError):
    """A problem in the access policy file; the message names the file and key path."""


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    users: list[str] = Field(
        default_factory=list, description="user names holding the role (oidc:<sub> for tokens)"
    )
    groups: list[str] = Field(
        default_factory=list, description="groups holding the role (oidc:<group> for tokens)"
    )
    services: list[str] = Field(default_factory=list, description="globs on service.name")
    keys: list[str] = Field(default_factory=list, description="globs on attribute keys; log.body for bodies")


class AccessPolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_reason_length: int = Field(default=10, ge=1)
    oidc: OidcSettings | None = None
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

    def roles_of(self, identity: Identity) -> list[str]:
        groups = set(identity.groups)
        return sorted(
            name
            for name, role in self.model.roles.items()
            if identity.user in role.users or groups.intersection(role.groups)
        )

    def check_role(self, identity: Identity, role_name: str) -> Decision:
        if self.role(role_name) is None:
            known = ", ".join(sorted(self.model.roles)) or "none"
            return Decision(False, f"unknown role {role_name!r} (roles in {self.source}: {known})")
        held = self.roles_of(identity)
        if role_name not in held:
            return Decision(
                False,
                f"{identity.user} ({identity.source}) does not hold role {role_name} "
                f"(holds: {', '.join(held) or 'none'})",
            )
        return Decision(True, f"{identity.user} holds role {role_name}")

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


def load_access_policy(path: str | Path | None = None, *, service_uid: int | None = None) -> AccessPolicy:
    """``path``, else ``$ERRORGATE_ACCESS_POLICY``, else the bundled ``governance/access.yaml``.

    Whichever it is must be owned by root or ``service_uid`` (the service user; default this
    process's user) and not be writable by group or others."""
    if path is None:
        path = os.environ.get(POLICY_ENV) or None
    where = (
        Path(path) if path is not None else Path(str(resources.files("errorgate.governance") / "access.yaml"))
    )
    check_policy_file(where, os.getuid() if service_uid is None else service_uid)
    model, source, data = load_model(
        path, "access.yaml", AccessPolicyModel, AccessPolicyError, "access policy"
    )
    return AccessPolicy(model=model, source=source, sha256=hashlib.sha256(data).hexdigest())


def check_policy_file(path: Path, service_uid: int) -> None:
    """Refuse a policy that someone other than root or the service user could have written."""
    try:
        st = path.stat()
    except OSError as e:
        raise AccessPolicyError(f"cannot read access policy {path}: {e.strerror}") from None
    if st.st_uid not in (0, service_uid):
        raise AccessPolicyError(
            f"access policy {path} is owned by uid {st.st_uid}; it must be owned by root or the "
            f"service user (uid {service_uid})"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise AccessPolicyError(
            f"access policy {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod go-w {path}"
        )
