"""What the governance commands (keys, decrypt, audit, rules) share: where the keyring, the
audit log and its signing key are (``--config``, ``--data-dir``, ``--keyring``, ``--audit-key``),
and recording policy and rules changes as audit events when a command first sees them."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from errorgate.extensions.keyring import AuditConfig, KeyringConfig, kms_from_config
from errorgate.governance.access import AccessPolicy
from errorgate.governance.audit_log import AuditLog, AuditSigner, AuditVerifier, public_path
from errorgate.governance.identity import Identity, os_identity
from errorgate.governance.keyring import Keyring
from errorgate.governance.kms import Kms, LocalKms

DATA_DIR_ENV = "ERRORGATE_DATA_DIR"
MASTER_KEY_ENV = "ERRORGATE_KEYRING"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    keyring_dir: Path
    keyring: KeyringConfig
    audit_log: Path
    signing_key: Path
    witness: Path | None
    rules_sha256: str | None  # of the config's processor settings, when --config was given


def add_location_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="gateway config: data_dir, keyring, kms and audit settings come from it",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help=f"data directory (default: ${DATA_DIR_ENV} or ./errorgate-data)"
    )
    parser.add_argument("--keyring", metavar="DIR", help="keyring directory (default: <data-dir>/keys)")
    parser.add_argument(
        "--audit-key",
        metavar="FILE",
        help="Ed25519 audit signing key (default: audit.signing_key, else <data-dir>/audit/signing.key)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    data_dir: str | None = args.data_dir
    keyring = KeyringConfig()
    rules_hash = None
    if args.config:
        from errorgate.config import load_config, rules_sha256

        config = load_config(args.config)
        data_dir = data_dir or config.service.data_dir
        for cfg in config.enabled_extensions().values():
            if isinstance(cfg, KeyringConfig):  # the keyring serve opens for this config
                keyring = cfg
                break
        rules_hash = rules_sha256(config)
    base = Path(data_dir or os.environ.get(DATA_DIR_ENV) or "./errorgate-data")
    keyring_dir = Path(args.keyring or keyring.keyring or base / "keys")
    audit: AuditConfig = keyring.audit
    log = Path(audit.log) if audit.log else base / "audit" / "decrypt.log"
    signing = Path(args.audit_key or audit.signing_key or base / "audit" / "signing.key")
    witness = Path(audit.witness) if audit.witness else None
    return Settings(base, keyring_dir, keyring, log, signing, witness, rules_hash)


def open_keyring(
    args: argparse.Namespace, *, create: bool = False, local: bool = False
) -> tuple[Keyring, Settings]:
    """The keyring the settings name; ``local`` ignores ``kms`` (to move a keyring off the local
    master key)."""
    settings = settings_from_args(args)
    cfg = settings.keyring
    kms: Kms | None = None if local else kms_from_config(cfg.kms)
    if kms is None and cfg.master_key_env:
        kms = LocalKms.from_env(cfg.master_key_env)
    if kms is None and cfg.master_key_file:
        kms, _ = LocalKms.from_file(Path(cfg.master_key_file), create=create)
    logger = logging.getLogger("errorgate.keyring")
    ring = Keyring.open(settings.keyring_dir, create=create, env_var=None, kms=kms, logger=logger)
    return ring, settings


def service_uid(settings: Settings) -> int:
    """The service user: the owner of the keyring directory (the gateway created it); this
    process's user when there is none yet."""
    try:
        return settings.keyring_dir.stat().st_uid
    except OSError:
        return os.getuid()


def audit_writer(settings: Settings) -> AuditLog:
    signer = AuditSigner.open(settings.signing_key, create=True)
    return AuditLog(
        settings.audit_log,
        signer=signer,
        witness=settings.witness,
        witness_every=settings.keyring.audit.witness_every,
    )


def audit_reader(settings: Settings, public_key: str | None) -> tuple[AuditLog, AuditVerifier]:
    """The log and a verifier from ``public_key`` (default: the ``.pub`` next to the signing key)."""
    path = Path(public_key) if public_key else public_path(settings.signing_key)
    verifier = AuditVerifier.from_file(path)
    return AuditLog(settings.audit_log, witness=settings.witness), verifier


def actor(identity: Identity | None = None) -> dict[str, Any]:
    who = identity or os_identity()
    return {"user": who.user, "groups": list(who.groups), "identity_source": who.source}


def record_changes(log: AuditLog, settings: Settings, policy: AccessPolicy | None, who: Identity) -> None:
    """Append ``policy_change`` / ``rules_change`` when the policy or the config's processor
    settings differ from the last ones the audit log recorded (first sight included)."""
    if policy is not None:
        last = log.last_event("policy_change")
        previous = last.get("policy_sha256") if last else None
        if previous != policy.sha256:
            log.append(
                {
                    "event": "policy_change",
                    "policy_sha256": policy.sha256,
                    "previous_sha256": previous,
                    "source": policy.source,
                    **actor(who),
                }
            )
    if settings.rules_sha256 is not None:
        last = log.last_event("rules_change")
        previous = last.get("rules_sha256") if last else None
        if previous != settings.rules_sha256:
            log.append(
                {
                    "event": "rules_change",
                    "rules_sha256": settings.rules_sha256,
                    "previous_sha256": previous,
                    **actor(who),
                }
            )
