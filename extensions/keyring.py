"""Extension ``keyring``: the keyring that field encryption, redact's keyed actions (token,
hash, encrypt) and encryption at rest of queues, dead letters and held items share.

Configured under ``extensions: {keyring: {...}}`` and enabled in ``service.extensions``. A
config written before extensions existed keeps working: an ``encrypt`` processor's keyring keys
imply this extension (``EncryptConfig.implied_extensions``) when none is declared.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from errorgate.codec import BytesCodec
from errorgate.component import ComponentConfig, ComponentContext, Extension, Factory
from errorgate.governance.audit_log import AuditLog, AuditSigner
from errorgate.governance.crypto import AeadCodec
from errorgate.governance.identity import os_identity
from errorgate.governance.keyring import Keyring
from errorgate.governance.kms import AwsKms, KeyringError, Kms, LocalKms, VaultTransitKms


class KmsConfig(ComponentConfig):
    """Where the key that wraps the data keys lives (envelope encryption)."""

    provider: Literal["local", "aws", "vault"] = Field(
        default="local", description="local master key file/env, AWS KMS, or Vault transit"
    )
    key_id: str | None = Field(default=None, description="aws: KMS key id, ARN or alias/NAME")
    region: str | None = Field(default=None, description="aws: region (default: the AWS SDK's)")
    endpoint_url: str | None = Field(
        default=None, description="aws: KMS endpoint (VPC endpoint, test server)"
    )
    url: str | None = Field(default=None, description="vault: server URL, e.g. https://vault:8200")
    key_name: str | None = Field(default=None, description="vault: transit key name")
    mount: str = Field(default="transit", description="vault: transit engine mount path")
    token_env: str = Field(default="VAULT_TOKEN", description="vault: env var holding the token")

    @model_validator(mode="after")
    def _required(self) -> KmsConfig:
        if self.provider == "aws" and not self.key_id:
            raise ValueError("kms.key_id is required for provider aws")
        if self.provider == "vault" and not (self.url and self.key_name):
            raise ValueError("kms.url and kms.key_name are required for provider vault")
        return self


class AuditConfig(ComponentConfig):
    """The governance audit log: signed with its own Ed25519 key, not with the data keyring."""

    log: str | None = Field(default=None, description="default <service.data_dir>/audit/decrypt.log")
    signing_key: str | None = Field(
        default=None, description="Ed25519 private key, created 0600 (default <data_dir>/audit/signing.key)"
    )
    witness: str | None = Field(
        default=None, description="append-only file of signed chain heads (default <log>.witness)"
    )
    witness_every: int = Field(default=1, ge=1, description="write a signed head every N entries")


class KeyringConfig(ComponentConfig):
    keyring: str | None = Field(
        default=None, description="keyring directory (default <service.data_dir>/keys)"
    )
    master_key_env: str | None = Field(
        default="ERRORGATE_KEYRING", description="env var with a base64url master key (takes precedence)"
    )
    master_key_file: str | None = Field(
        default=None, description="master key file (default <keyring>/master.key)"
    )
    kms: KmsConfig = Field(default_factory=KmsConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)


def kms_from_config(config: KmsConfig) -> Kms | None:
    """The cloud KMS ``config`` names; None for ``local`` (the master key settings apply)."""
    if config.provider == "aws":
        assert config.key_id is not None
        return AwsKms(config.key_id, region=config.region, endpoint_url=config.endpoint_url)
    if config.provider == "vault":
        assert config.url is not None and config.key_name is not None
        token = os.environ.get(config.token_env)
        if not token:
            raise KeyringError(f"kms.token_env: environment variable {config.token_env} is not set")
        return VaultTransitKms(config.key_name, url=config.url, token=token, mount=config.mount)
    return None


def open_keyring(config: KeyringConfig, data_dir: Path, logger: logging.Logger) -> Keyring:
    """Open (creating when missing) the keyring ``config`` points at."""
    directory = Path(config.keyring) if config.keyring else Path(data_dir) / "keys"
    kms: Kms | None = kms_from_config(config.kms)
    if kms is None and config.master_key_env:
        kms = LocalKms.from_env(config.master_key_env)
    if kms is None and config.master_key_file:
        kms, created = LocalKms.from_file(Path(config.master_key_file), create=True)
        if created:
            logger.warning("created local master key at %s (owner-only)", config.master_key_file)
    return Keyring.open(directory, create=True, env_var=None, kms=kms, logger=logger)


def audit_log_for(config: AuditConfig, data_dir: Path) -> tuple[Path, Path, Path | None]:
    """(log, signing key, witness) the ``audit`` settings name, with their defaults."""
    base = Path(data_dir)
    log = Path(config.log) if config.log else base / "audit" / "decrypt.log"
    signing = Path(config.signing_key) if config.signing_key else base / "audit" / "signing.key"
    return log, signing, Path(config.witness) if config.witness else None


class KeyringExtension(Extension):
    """The keyring, the at-rest codec made from it, and the gateway's writer to the governance
    audit log (the same signed log ``errorgate decrypt`` appends to)."""

    def __init__(
        self, keyring: Keyring, audit: AuditConfig | None = None, data_dir: Path | None = None
    ) -> None:
        self.keyring = keyring
        self._codec: AeadCodec | None = None
        self._audit_settings = (audit or AuditConfig()) if data_dir is not None else None
        self._data_dir = data_dir
        self._audit_log: AuditLog | None = None
        self._audit_lock = threading.Lock()
        self._log = logging.getLogger("errorgate.audit")

    def at_rest_codec(self) -> BytesCodec:
        if self._codec is None:  # made on first use: ``errorgate rules test`` stands a stub keyring in
            self._codec = AeadCodec(self.keyring, "at-rest")
        return self._codec

    def _writer(self) -> AuditLog | None:
        """Opened on first use (the signing key is created then, owner-only)."""
        if self._audit_settings is None or self._data_dir is None:
            return None  # a keyring opened by a command: the command writes its own audit entries
        if self._audit_log is None:
            log, signing, witness = audit_log_for(self._audit_settings, self._data_dir)
            self._audit_log = AuditLog(
                log,
                signer=AuditSigner.open(signing, create=True),
                witness=witness,
                witness_every=self._audit_settings.witness_every,
            )
        return self._audit_log

    def _append(self, record: Mapping[str, Any]) -> None:
        who = os_identity()
        entry = {**record, "user": who.user, "groups": list(who.groups), "identity_source": "gateway"}
        try:
            with self._audit_lock:
                writer = self._writer()
                if writer is not None:
                    writer.append(entry)
        except (OSError, ValueError) as e:
            # The gateway goes on (the expiry happened, the rules run); the gap is visible here.
            self._log.error("audit log: could not record %s: %s", record.get("event"), e)

    def audit(self, record: Mapping[str, Any]) -> None:
        self._append(record)

    def audit_change(self, event: str, key: str, value: str) -> None:
        try:
            with self._audit_lock:
                writer = self._writer()
                last = writer.last_event(event) if writer is not None else None
        except (OSError, ValueError) as e:
            self._log.error("audit log: could not read the last %s: %s", event, e)
            return
        previous = last.get(key) if last else None
        if previous != value:
            self._append({"event": event, key: value, "previous_sha256": previous})


def create_keyring(config: KeyringConfig, context: ComponentContext) -> Extension:
    # The logger keeps the name it had before the keyring was an extension.
    ring = open_keyring(config, context.data_dir, logging.getLogger("errorgate.keyring"))
    return KeyringExtension(ring, config.audit, context.data_dir)


factory: Factory[KeyringConfig, Extension] = Factory(
    "keyring", KeyringConfig, create_keyring, KeyringExtension
)
