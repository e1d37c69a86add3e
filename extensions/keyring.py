"""Extension ``keyring``: the keyring that field encryption, redact's keyed actions (token,
hash, encrypt) and encryption at rest of queues, dead letters and held items share.

Configured under ``extensions: {keyring: {...}}`` and enabled in ``service.extensions``. A
config written before extensions existed keeps working: an ``encrypt`` processor's keyring keys
imply this extension (``EncryptConfig.implied_extensions``) when none is declared.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from errorgate.codec import BytesCodec
from errorgate.component import ComponentConfig, ComponentContext, Extension, Factory
from errorgate.governance.crypto import AeadCodec
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


class KeyringExtension(Extension):
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._codec: AeadCodec | None = None

    def at_rest_codec(self) -> BytesCodec:
        if self._codec is None:  # made on first use: ``errorgate rules test`` stands a stub keyring in
            self._codec = AeadCodec(self.keyring, "at-rest")
        return self._codec


def create_keyring(config: KeyringConfig, context: ComponentContext) -> Extension:
    # The logger keeps the name it had before the keyring was an extension.
    return KeyringExtension(open_keyring(config, context.data_dir, logging.getLogger("errorgate.keyring")))


factory: Factory[KeyringConfig, Extension] = Factory(
    "keyring", KeyringConfig, create_keyring, KeyringExtension
)
