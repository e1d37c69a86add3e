"""Extension ``keyring``: the keyring that field encryption, redact's keyed actions (token,
hash, encrypt) and encryption at rest of queues, dead letters and held items share.

Configured under ``extensions: {keyring: {...}}`` and enabled in ``service.extensions``. A
config written before extensions existed keeps working: an ``encrypt`` processor's keyring keys
imply this extension (``EncryptConfig.implied_extensions``) when none is declared.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from errorgate.codec import BytesCodec
from errorgate.component import ComponentConfig, ComponentContext, Extension, Factory
from errorgate.governance.crypto import AeadCodec
from errorgate.governance.keyring import Keyring
from errorgate.governance.kms import Kms, LocalKms


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


def open_keyring(config: KeyringConfig, data_dir: Path, logger: logging.Logger) -> Keyring:
    """Open (creating when missing) the keyring ``config`` points at."""
    directory = Path(config.keyring) if config.keyring else Path(data_dir) / "keys"
    kms: Kms | None = None
    if config.master_key_env:
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
