"""What replaces a finding. errorgate's own operators: Presidio's ``hash`` salts per entity
(not joinable) and its ``encrypt`` is unauthenticated AES-CBC, so neither is used."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from errorgate.processors.redaction.specs import Finding

FAILED_MASK = "<REDACTION_FAILED>"
BLOCKED_MASK = "<REDACTED>"
HASH_PURPOSE = "redact-hash"
TOKEN_PURPOSE = "redact-token"


@runtime_checkable
class Keyring(Protocol):
    """What ``redact`` needs from the gateway's keyring service (``context.service("keyring")``)."""

    def hmac_key(self, purpose: str) -> tuple[str, bytes]:
        """(key id, key bytes) of the active key for ``purpose``."""
        ...

    def encrypt_field(self, plaintext: str, *, key: str, signal: str, tenant: str, service: str) -> str:
        """AEAD-encrypt one value bound to its attribute key, signal, tenant and service: ``enc:v2:...``."""
        ...


@dataclass(frozen=True)
class Where:
    """Binding data for ``encrypt``: the attribute key (or field name) a value sits in."""

    key: str
    signal: str
    tenant: str
    service: str


class Replacer:
    """Applies actions to findings in one string. Stateless apart from the keyring."""

    def __init__(self, actions: dict[str, str], keyring: Keyring | None) -> None:
        self.actions = actions
        self.keyring = keyring

    def action(self, entity_type: str) -> str:
        return self.actions.get(entity_type, "mask")

    def rewrite(
        self, value: str, findings: Sequence[Finding], where: Where, *, can_drop: bool = True
    ) -> tuple[str, bool]:
        """(new value, drop_attribute). Findings must not overlap (the engine guarantees it).
        Where the value cannot be removed (names, bodies, array elements) ``drop`` masks."""
        out: list[str] = []
        pos = 0
        for f in findings:
            action = self.action(f.entity_type)
            if action == "drop":
                if can_drop:
                    return "", True
                action = "mask"
            out.append(value[pos : f.start])
            out.append(self.replace(value[f.start : f.end], f.entity_type, action, where))
            pos = f.end
        out.append(value[pos:])
        return "".join(out), False

    def replace(self, text: str, entity_type: str, action: str, where: Where) -> str:
        if action == "partial":
            return partial_mask(text)
        if action == "hash":
            return hmac_hex(self._key(HASH_PURPOSE), text)
        if action == "token":
            digest = hmac_hex(self._key(TOKEN_PURPOSE), f"{entity_type}\x00{text}")
            return f"tok:{entity_type}:{digest[:32]}"
        if action == "encrypt":
            if self.keyring is None:
                raise RuntimeError("encrypt action needs a keyring")
            return self.keyring.encrypt_field(
                text, key=where.key, signal=where.signal, tenant=where.tenant, service=where.service
            )
        return f"<{entity_type}>"

    def _key(self, purpose: str) -> bytes:
        if self.keyring is None:
            # Config validation refuses keyed actions without a keyring; never fall back to unkeyed.
            raise RuntimeError(f"{purpose} needs a keyring")
        return self.keyring.hmac_key(purpose)[1]


def hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def partial_mask(text: str) -> str:
    """Last four digits (PCI DSS permits showing them); everything else starred."""
    digits = [c for c in text if c.isdigit()]
    if len(digits) >= 8:
        return "*" * (len(digits) - 4) + "".join(digits[-4:])
    keep = 4 if len(text) > 8 else 0
    return "*" * (len(text) - keep) + text[len(text) - keep :]


def set_attributes(attrs: MutableSequence[KeyValue], values: dict[str, int | str]) -> None:
    """``attributes.set_value`` of each of ``values`` (bool, int or str; appended in order when
    absent) with one pass over the item's attributes instead of one per value, and appending
    with ``add()`` (half the cost of ``append(KeyValue(...))``). Empties ``values``."""
    for kv in attrs:
        if not values:
            return
        value = values.pop(kv.key, None)
        if value is not None:
            _set_any(kv.value, value)
    for key, value in values.items():
        kv = attrs.add()  # type: ignore[attr-defined]
        kv.key = key
        _set_any(kv.value, value)


def _set_any(out: AnyValue, value: int | str) -> None:
    """``out.CopyFrom(attributes.to_any(value))`` for bool, int and str values."""
    out.Clear()
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    else:
        out.string_value = value
