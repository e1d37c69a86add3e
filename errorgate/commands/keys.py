"""``errorgate keys init|rotate|list|disable``: manage the field/at-rest encryption keyring.

Also home of the location options (``--config``, ``--data-dir``, ``--keyring``) that the
decrypt and audit commands share, so all of them find the same keyring the gateway uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from errorgate.extensions.keyring import KmsConfig, kms_from_config
from errorgate.governance.keyring import KEYRING_FILE

from ._governance import Settings, actor, add_location_args, audit_writer, open_keyring, settings_from_args

__all__ = ["add_location_args", "open_keyring"]


def _audit_key_event(settings: Settings, event: str, **fields: Any) -> None:
    """Key operations are governance events: signed into the audit log before returning."""
    audit_writer(settings).append({"event": event, **fields, **actor()})


# ---------------------------------------------------------------- commands


def _init(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    existed = (settings.keyring_dir / KEYRING_FILE).exists()
    ring, settings = open_keyring(args, create=True)
    state = "already exists" if existed else "created"
    if not existed:
        _audit_key_event(settings, "key_init", key_id=ring.active_key_id(), keyring=str(ring.path))
    print(f"keyring {state} at {ring.path} (active key {ring.active_key_id()})")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    ring, settings = open_keyring(args)
    old = ring.active_key_id()
    new = ring.rotate()
    _audit_key_event(settings, "key_rotate", key_id=new, previous_key_id=old, keyring=str(ring.path))
    print(f"rotated: new values are encrypted under {new}; {old} is retired (still decrypts)")
    print("running gateways pick the new key up on restart")
    return 0


def _list(args: argparse.Namespace) -> int:
    ring, _ = open_keyring(args)
    keys = ring.list()
    if args.format == "json":
        print(json.dumps([k.__dict__ for k in keys], indent=2))
        return 0
    print(f"{'KEY ID':<12} {'STATUS':<9} {'CREATED':<26} DISABLED")
    for k in keys:
        print(f"{k.id:<12} {k.status:<9} {k.created:<26} {k.disabled or ''}")
    return 0


def _disable(args: argparse.Namespace) -> int:
    if not args.yes:
        print(
            f"errorgate keys disable: refusing without --yes: disabling {args.key_id} destroys it and makes "
            "every value encrypted under it permanently undecryptable",
            file=sys.stderr,
        )
        return 2
    ring, settings = open_keyring(args)
    ring.disable(args.key_id)
    _audit_key_event(settings, "key_disable", key_id=args.key_id, keyring=str(ring.path))
    print(f"disabled {args.key_id}: key material deleted; its ciphertexts can no longer be decrypted")
    return 0


def _rewrap(args: argparse.Namespace) -> int:
    ring, settings = open_keyring(args, local=args.from_local)
    target_cfg = settings.keyring.kms
    if args.to_key_id:
        if target_cfg.provider != "aws":
            raise ValueError(
                "--to-key-id: only for kms.provider aws (vault rewraps to the newest key version)"
            )
        target_cfg = KmsConfig.model_validate({**target_cfg.model_dump(), "key_id": args.to_key_id})
    target = kms_from_config(target_cfg)
    if target is None:
        raise ValueError("kms.provider: rewrap needs a cloud KMS (aws or vault) configured in --config")
    count = ring.rewrap(target)
    _audit_key_event(
        settings, "key_rewrap", kms=target.name, kms_key=target_cfg.key_id or target_cfg.key_name, keys=count
    )
    print(f"re-wrapped {count} data keys with {target.name}; no data was re-encrypted")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = subparsers.add_parser(
        "keys",
        help="manage the encryption keyring",
        description="Manage the keyring used for field encryption (enc:v2 values), redaction hashes/tokens, "
        "encryption at rest of queues and dead letters, (the audit log is signed with its own key).",
    )
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    p = sub.add_parser("init", help="create the keyring (and a local master key) if missing")
    add_location_args(p)
    p.set_defaults(func=_init)

    p = sub.add_parser("rotate", help="add a new active key; old keys keep decrypting")
    add_location_args(p)
    p.set_defaults(func=_rotate)

    p = sub.add_parser("list", help="list key ids and their status (never key material)")
    add_location_args(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "rewrap",
        help="re-wrap every data key with the configured KMS key (after a KMS key rotation)",
        description="Unwrap each data key with the KMS it was wrapped with and wrap it again with the "
        "configured one (kms.* in --config, or --to-key-id for AWS). Field values and files at rest are "
        "not touched: only the envelope changes.",
    )
    add_location_args(p)
    p.add_argument("--to-key-id", metavar="KEY", help="aws: wrap with this KMS key instead of kms.key_id")
    p.add_argument(
        "--from-local", action="store_true", help="the keyring is still wrapped by the local master key"
    )
    p.set_defaults(func=_rewrap)

    p = sub.add_parser(
        "disable",
        help="crypto-shred a retired key",
        description="Delete a retired key's material. Every value encrypted under it becomes permanently "
        "undecryptable, wherever copies live (backends, backups, dead letters): crypto-shredding. "
        "The audit log stays verifiable. Irreversible: requires --yes.",
    )
    add_location_args(p)
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--yes", action="store_true", help="confirm the irreversible deletion")
    p.set_defaults(func=_disable)
