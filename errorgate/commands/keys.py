"""``errorgate keys init|rotate|list|disable``: manage the field/at-rest encryption keyring.

Also home of the location options (``--config``, ``--data-dir``, ``--keyring``) that the
decrypt and audit commands share, so all of them find the same keyring the gateway uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from errorgate.governance.keyring import KEYRING_FILE, Keyring
from errorgate.governance.kms import Kms, LocalKms

DATA_DIR_ENV = "ERRORGATE_DATA_DIR"
MASTER_KEY_ENV = "ERRORGATE_KEYRING"


class _Settings:
    def __init__(
        self, data_dir: Path, keyring_dir: Path, master_env: str | None, master_file: str | None
    ) -> None:
        self.data_dir = data_dir
        self.keyring_dir = keyring_dir
        self.master_env = master_env
        self.master_file = master_file


def add_location_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="gateway config: data_dir and encrypt settings come from it"
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help=f"data directory (default: ${DATA_DIR_ENV} or ./errorgate-data)"
    )
    parser.add_argument("--keyring", metavar="DIR", help="keyring directory (default: <data-dir>/keys)")


def settings_from_args(args: argparse.Namespace) -> _Settings:
    data_dir: str | None = args.data_dir
    keyring_dir: str | None = args.keyring
    master_env: str | None = MASTER_KEY_ENV
    master_file: str | None = None
    if args.config:
        from errorgate.config import load_config

        config = load_config(args.config)
        data_dir = data_dir or config.service.data_dir
        from errorgate.extensions.keyring import KeyringConfig

        for cfg in config.enabled_extensions().values():
            if isinstance(cfg, KeyringConfig):  # the keyring serve opens for this config
                keyring_dir = keyring_dir or cfg.keyring
                master_env = cfg.master_key_env
                master_file = cfg.master_key_file
                break
    base = Path(data_dir or os.environ.get(DATA_DIR_ENV) or "./errorgate-data")
    return _Settings(base, Path(keyring_dir) if keyring_dir else base / "keys", master_env, master_file)


def open_keyring(args: argparse.Namespace, *, create: bool = False) -> tuple[Keyring, _Settings]:
    settings = settings_from_args(args)
    kms: Kms | None = LocalKms.from_env(settings.master_env) if settings.master_env else None
    if kms is None and settings.master_file:
        kms, _ = LocalKms.from_file(Path(settings.master_file), create=create)
    logger = logging.getLogger("errorgate.keyring")
    ring = Keyring.open(settings.keyring_dir, create=create, env_var=None, kms=kms, logger=logger)
    return ring, settings


# ---------------------------------------------------------------- commands


def _init(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    existed = (settings.keyring_dir / KEYRING_FILE).exists()
    ring, _ = open_keyring(args, create=True)
    state = "already exists" if existed else "created"
    print(f"keyring {state} at {ring.path} (active key {ring.active_key_id()})")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    ring, _ = open_keyring(args)
    old = ring.active_key_id()
    new = ring.rotate()
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
    ring, _ = open_keyring(args)
    ring.disable(args.key_id)
    print(f"disabled {args.key_id}: key material deleted; its ciphertexts can no longer be decrypted")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = subparsers.add_parser(
        "keys",
        help="manage the encryption keyring",
        description="Manage the keyring used for field encryption (enc:v1 values), redaction hashes/tokens, "
        "encryption at rest of queues and dead letters, and the audit log's HMAC.",
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
