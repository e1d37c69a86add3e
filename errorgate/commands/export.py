"""``errorgate export training``: anonymized per-minute error features and incident labels for
anomaly models (see ``errorgate.incidents.training`` for the sources and the anonymization)."""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

from errorgate.cli import CommandError
from errorgate.config import load_config, parse_duration

KEY_ENV = "ERRORGATE_EXPORT_KEY"
MIN_KEY_BYTES = 16


def _key(args: argparse.Namespace) -> bytes:
    """The HMAC key: the keyring's ``training-export`` subkey with ``--use-keyring`` (stable
    pseudonyms across exports until the keyring rotates), else ``--key-env``."""
    if args.use_keyring:
        from errorgate.commands._governance import open_keyring

        ring, _ = open_keyring(args)
        return ring.hmac_key("training-export")[1]
    text = os.environ.get(args.key_env, "")
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) if text else b""
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < MIN_KEY_BYTES:
        raise CommandError(
            f"--key-env: set {args.key_env} to a base64url key of at least {MIN_KEY_BYTES} bytes "
            "(or use --use-keyring)"
        )
    return key


def write_rows(rows: list[dict[str, Any]], path: Path, fmt: str) -> None:
    from errorgate.incidents.training import COLUMNS

    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise CommandError("--format parquet: pyarrow is not installed (use --format csv)") from None
        table = pa.table({c: [r.get(c) for r in rows] for c in COLUMNS})
        pq.write_table(table, path)
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _export(args: argparse.Namespace) -> int:
    from errorgate.commands.incidents import _store
    from errorgate.incidents.engine import Engine
    from errorgate.incidents.training import (
        ExportError,
        add_labels,
        check_k_anonymity,
        from_prometheus,
        from_store,
        k_anonymize,
        scrub,
    )

    try:
        window = parse_duration(args.since)
    except ValueError as e:
        raise CommandError(f"--since: {e}") from None
    key = _key(args)
    until = time.time() if args.until is None else float(args.until)
    since = until - window
    engine = Engine(_store(load_config(args.config)))
    try:
        rows = from_store(engine, since, until)
        if args.prometheus:
            token = os.environ.get(args.prometheus_token_env) if args.prometheus_token_env else None
            rows += from_prometheus(args.prometheus, since, until, token)
        add_labels(rows, engine, since)
        result = k_anonymize(scrub(rows, key), args.k)
    except ExportError as e:
        raise CommandError(str(e)) from None
    finally:
        engine.store.dispose()
    ok, _ = check_k_anonymity(result.rows, args.k)
    if not ok:  # never write a file that fails its own promise
        raise CommandError(f"--k {args.k}: the output is not {args.k}-anonymous; nothing written")
    write_rows(result.rows, Path(args.output), args.format)
    steps = ", ".join(f"{s} {n}" for s, n in result.generalized.items()) or "none"
    print(f"{args.output}: {len(result.rows)} rows ({args.format}), k={args.k} checked; "
          f"suppressed {result.suppressed} of {len(rows)}; generalized: {steps}", file=sys.stderr)  # fmt: skip
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("export", help="export data sets (anonymized training data)")
    sub = p.add_subparsers(dest="export_command", metavar="WHAT", required=True)
    s = sub.add_parser(
        "training",
        help="per-minute error features + incident labels, pseudonymized and k-anonymous",
        description="Per-minute error features per service/fingerprint/kind/category/version with "
        "the engine's incident labels. No free text; service and fingerprint are keyed-HMAC "
        "pseudonyms; rows are generalized until every group has k rows, the rest suppressed.",
    )
    s.add_argument("--since", default="30d", help="window, e.g. 30d (default 30d)")
    s.add_argument("--until", help="end of the window, unix seconds (default now)")
    s.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    s.add_argument("--output", "-o", required=True, metavar="FILE")
    s.add_argument("--k", type=int, default=5, help="minimum rows per quasi-identifier group (default 5)")
    s.add_argument("--prometheus", metavar="URL", help="Prometheus query API with errorgate's metrics")
    s.add_argument("--prometheus-token-env", metavar="VAR", help="env var with a Bearer token for it")
    s.add_argument(
        "--key-env", default=KEY_ENV, help=f"env var with the HMAC key, base64url (default {KEY_ENV})"
    )
    s.add_argument("--use-keyring", action="store_true", help="HMAC key from the keyring instead")
    s.add_argument("--data-dir", metavar="DIR", help="with --use-keyring: data directory")
    s.add_argument("--keyring", metavar="DIR", help="with --use-keyring: keyring directory")
    s.add_argument("--audit-key", metavar="FILE", help=argparse.SUPPRESS)
    s.add_argument("--config", metavar="FILE", help="config file (the incident store, the keyring)")
    s.set_defaults(func=_export)
