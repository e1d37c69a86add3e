"""``errorgate decrypt``: role-checked, reason-stated, audited decryption of ``enc:v1`` values.

Every attempt, allowed or not, is appended to ``<data_dir>/audit/decrypt.log`` *before* any
plaintext is shown; if the audit entry cannot be written nothing is revealed.

A single VALUE needs its context (``--service``, ``--key``, ``--signal``, ``--tenant``): the
ciphertext is bound to it. With ``--file``, OTLP/JSON lines (the file exporter's format)
supply the context themselves and are written back with the permitted values decrypted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator, MutableSequence
from pathlib import Path
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from errorgate import attributes
from errorgate.governance.access import AccessPolicy, load_access_policy
from errorgate.governance.audit_log import AuditLog, ciphertext_digest
from errorgate.governance.crypto import DecryptError, is_encrypted, parse_field_token
from errorgate.governance.keyring import Keyring
from errorgate.governance.kms import write_private_file
from errorgate.signals import Signal

from .keys import add_location_args, open_keyring

_POINT_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_SIGNAL_KEYS = {
    "resourceSpans": Signal.TRACES,
    "resourceLogs": Signal.LOGS,
    "resourceMetrics": Signal.METRICS,
}


class Decryptor:
    """Checks policy, audits, decrypts: one ``attempt`` per value."""

    def __init__(
        self, keyring: Keyring, policy: AccessPolicy, audit: AuditLog, *, user: str, role: str, reason: str
    ) -> None:
        self.keyring = keyring
        self.policy = policy
        self.audit = audit
        self.user = user
        self.role = role
        self.reason = reason
        self.counts = {"allowed": 0, "denied": 0, "failed": 0}
        self.last_detail = ""

    def attempt(self, token: str, *, service: str, key: str, signal: str, tenant: str) -> str | None:
        try:
            key_id = parse_field_token(token)[0]
        except DecryptError:
            key_id = ""
        decision = self.policy.check_reason(self.reason)
        if decision.allowed:
            decision = self.policy.decide(self.role, service=service, key=key)
        plaintext: str | None = None
        outcome, detail = ("allowed", decision.detail) if decision.allowed else ("denied", decision.detail)
        if decision.allowed:
            try:
                plaintext = self.keyring.decrypt_field(token, key=key, signal=signal, tenant=tenant)
            except DecryptError as e:
                outcome, detail = "failed", str(e)
        self.audit.append(
            {
                "user": self.user,
                "os_user": _os_user(),
                "role": self.role,
                "service": service,
                "field": key,
                "signal": signal,
                "tenant": tenant,
                "key_id": key_id,
                "ciphertext_sha256": ciphertext_digest(token),
                "outcome": outcome,
                "detail": detail,
                "reason": self.reason,
                "policy_sha256": self.policy.sha256,
            }
        )
        self.counts[outcome] += 1
        self.last_detail = detail
        return plaintext


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# ---------------------------------------------------------------- OTLP/JSON files


def _attr_lists(signal: Signal, request: Any) -> Iterator[tuple[MutableSequence[KeyValue], Any]]:
    """(attribute list, resource attributes) for every attribute list in ``request``."""
    if signal is Signal.TRACES:
        for rs in request.resource_spans:
            res = rs.resource.attributes
            yield res, res
            for ss in rs.scope_spans:
                yield ss.scope.attributes, res
                for span in ss.spans:
                    yield span.attributes, res
                    for event in span.events:
                        yield event.attributes, res
                    for link in span.links:
                        yield link.attributes, res
    elif signal is Signal.LOGS:
        for rl in request.resource_logs:
            res = rl.resource.attributes
            yield res, res
            for sl in rl.scope_logs:
                yield sl.scope.attributes, res
                for record in sl.log_records:
                    yield record.attributes, res
    else:
        for rm in request.resource_metrics:
            res = rm.resource.attributes
            yield res, res
            for sm in rm.scope_metrics:
                yield sm.scope.attributes, res
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind in _POINT_KINDS:
                        for point in getattr(metric, kind).data_points:
                            yield point.attributes, res


def _bodies(signal: Signal, request: Any) -> Iterator[tuple[AnyValue, Any]]:
    if signal is Signal.LOGS:
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    yield record.body, rl.resource.attributes


def decrypt_otlp_line(line: str, dec: Decryptor, tenant_attribute: str) -> str:
    from errorgate.otlp.json_format import from_json, to_json

    doc = json.loads(line)
    signal = next((s for k, s in _SIGNAL_KEYS.items() if k in doc), None)
    if signal is None:
        raise ValueError(
            "not an OTLP/JSON export request (no resourceSpans, resourceLogs or resourceMetrics)"
        )
    request = from_json(signal, line)
    targets: list[tuple[str, AnyValue, Any]] = [
        (kv.key, kv.value, res) for attrs, res in _attr_lists(signal, request) for kv in attrs
    ]
    targets += [("log.body", body, res) for body, res in _bodies(signal, request)]
    for key, value, res in targets:
        if value.WhichOneof("value") != "string_value" or not is_encrypted(value.string_value):
            continue
        plain = dec.attempt(
            value.string_value,
            service=attributes.get_str(res, "service.name"),
            key=key,
            signal=signal.value,
            tenant=attributes.get_str(res, tenant_attribute),
        )
        if plain is not None:
            value.string_value = plain
    return to_json(request)


# ---------------------------------------------------------------- command


def _run(args: argparse.Namespace) -> int:
    if (args.value is None) == (args.file is None):
        print("errorgate decrypt: give exactly one of VALUE or --file FILE", file=sys.stderr)
        return 2
    if args.value is not None and (args.service is None or args.key is None):
        print(
            "errorgate decrypt: VALUE needs --service and --key (the ciphertext is bound to them)",
            file=sys.stderr,
        )
        return 2
    keyring, settings = open_keyring(args)
    policy = load_access_policy(args.policy)
    audit = AuditLog.in_data_dir(settings.data_dir, keyring)
    dec = Decryptor(keyring, policy, audit, user=args.user or _os_user(), role=args.role, reason=args.reason)
    if args.value is not None:
        plain = dec.attempt(
            args.value, service=args.service, key=args.key, signal=args.signal, tenant=args.tenant
        )
        if plain is None:
            outcome = "denied" if dec.counts["denied"] else "failed"
            print(f"errorgate decrypt: {outcome}: {dec.last_detail} (attempt recorded)", file=sys.stderr)
            return 1
        print(plain)
        return 0
    source = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    results = []
    for number, line in enumerate(source.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            results.append(decrypt_otlp_line(line, dec, args.tenant_attribute) + "\n")
        except ValueError as e:
            print(f"errorgate decrypt: {args.file} line {number}: {e}", file=sys.stderr)
            return 2
    if args.output in (None, "-"):
        sys.stdout.writelines(results)
    else:
        # Decrypted telemetry is sensitive: owner-only, like the keys.
        write_private_file(Path(args.output), "".join(results).encode("utf-8"))
    c = dec.counts
    summary = f"decrypted {c['allowed']}, denied {c['denied']}, failed {c['failed']} (all attempts recorded)"
    if c["denied"] or c["failed"]:
        print(f"errorgate decrypt: {summary}; last refusal: {dec.last_detail}", file=sys.stderr)
        return 1
    print(f"errorgate decrypt: {summary}", file=sys.stderr)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "decrypt",
        help="decrypt enc:v1 values (role + reason required, audited)",
        description="Decrypt enc:v1 values if the role's policy (governance/access.yaml) allows the service "
        "and attribute. Every attempt, allowed or denied, is recorded in <data-dir>/audit/decrypt.log.",
    )
    p.add_argument("value", nargs="?", metavar="VALUE", help="one enc:v1:... value")
    p.add_argument("--file", metavar="FILE", help="OTLP/JSON lines (file exporter output); '-' for stdin")
    p.add_argument("--output", metavar="FILE", help="with --file: where to write the result (default stdout)")
    p.add_argument("--role", required=True, help="role from the access policy, e.g. security-oncall")
    p.add_argument("--reason", required=True, help="why (ticket id and purpose); recorded in the audit log")
    p.add_argument("--user", help="who is asking (default: the OS user; both are recorded)")
    p.add_argument("--service", help="service.name the VALUE came from")
    p.add_argument("--key", help="attribute key the VALUE came from (log.body for a log body)")
    p.add_argument("--signal", choices=[s.value for s in Signal], default="traces", help="default traces")
    p.add_argument("--tenant", default="", help="tenant the VALUE belongs to (default none)")
    p.add_argument(
        "--tenant-attribute", default="tenant.id", help="with --file: resource attribute of the tenant"
    )
    p.add_argument("--policy", metavar="FILE", help="access policy (default: governance/access.yaml)")
    add_location_args(p)
    p.set_defaults(func=_run)
