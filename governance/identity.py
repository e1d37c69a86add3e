"""Who is asking: an identity the caller cannot just type.

Two sources, as in Kubernetes' authentication:
- the operating system: the user and groups of the calling process (``os.getuid``,
  ``os.getgroups``, resolved through ``pwd``/``grp``) -- the CLI's default;
- a verified OIDC ID token (JWT): signature against a configured JWKS file, issuer, audience
  and expiry all checked (PyJWT). Its subject and groups claims are prefixed (``oidc:`` by
  default) so a token can never pass for a local account of the same name.

``access.yaml`` maps users and groups to roles; ``--role`` only selects among them.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

import jwt
from pydantic import BaseModel, ConfigDict, Field


class IdentityError(ValueError):
    """An identity could not be established; the message says why (never the token)."""


class OidcSettings(BaseModel):
    """``oidc:`` in access.yaml: which tokens are trusted."""

    model_config = ConfigDict(extra="forbid")
    issuer: str = Field(description="exact `iss` required")
    audience: str = Field(description="required in `aud`")
    jwks_file: str = Field(description="JSON Web Key Set file the tokens are signed with")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    username_claim: str = "sub"
    groups_claim: str = "groups"
    prefix: str = Field(default="oidc:", description="prepended to the user and each group")
    leeway_seconds: int = Field(default=30, ge=0, le=300)


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]
    source: str  # "os" or "oidc <issuer>"


def os_identity() -> Identity:
    """The user and groups of this process, from the kernel's credentials (not $USER)."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid:{uid}"
    names = set()
    for gid in {os.getgid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(f"gid:{gid}")
    return Identity(user, tuple(sorted(names)), "os")


def token_identity(token: str, settings: OidcSettings | None, *, policy_source: str) -> Identity:
    """The identity a verified ID token asserts; ``IdentityError`` when anything does not check."""
    if settings is None:
        raise IdentityError(f"an ID token was given but {policy_source} configures no `oidc` issuer")
    keys = _jwks(Path(settings.jwks_file))
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        key = keys.get(kid) if kid else next(iter(keys.values()), None)
        if key is None:
            raise IdentityError(f"ID token refused: signing key {kid!r} is not in {settings.jwks_file}")
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=settings.algorithms,
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway_seconds,
            options={"require": ["exp", "iss", "aud", settings.username_claim]},
        )
    except jwt.ExpiredSignatureError:
        raise IdentityError("ID token refused: expired") from None
    except jwt.InvalidAudienceError:
        raise IdentityError(f"ID token refused: audience is not {settings.audience!r}") from None
    except jwt.InvalidIssuerError:
        raise IdentityError(f"ID token refused: issuer is not {settings.issuer!r}") from None
    except jwt.InvalidSignatureError:
        raise IdentityError("ID token refused: signature does not verify") from None
    except jwt.PyJWTError as e:
        raise IdentityError(f"ID token refused: {type(e).__name__}") from None
    groups = claims.get(settings.groups_claim) or []
    if not isinstance(groups, list):
        groups = [groups]
    prefix = settings.prefix
    return Identity(
        prefix + str(claims[settings.username_claim]),
        tuple(sorted(prefix + str(g) for g in groups)),
        f"oidc {settings.issuer}",
    )


def _jwks(path: Path) -> dict[str | None, jwt.PyJWK]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keyset = jwt.PyJWKSet.from_dict(data)
    except OSError as e:
        raise IdentityError(f"oidc.jwks_file {path}: {e.strerror}") from None
    except (ValueError, jwt.PyJWTError):
        raise IdentityError(f"oidc.jwks_file {path}: not a JSON Web Key Set") from None
    return {k.key_id: k for k in keyset.keys}
