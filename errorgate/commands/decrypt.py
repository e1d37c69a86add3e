"""``errorgate decrypt``: role-checked, reason-stated, audited decryption of ``enc:v2`` (and
legacy ``enc:v1``) values. The caller is the OS user and groups of this process, or the subject
of a verified ID token -- never a name typed on the command line.

Every attempt, allowed or not, is appended to ``<data_dir>/audit/decrypt.log`` *before* any
plaintext is shown; if the audit entry cannot be written nothing is revealed.

A single VALUE needs its context (``--service``, ``--key``, ``--signal``, ``--tenant``): the
ciphertext is bound to it. With ``--file``, OTLP/JSON lines (the file exporter's format)
supply the context themselves and are written back with the permitted values decrypted. Lines
the file exporter sealed at rest (``egrest:v1:``) are opened first, once the caller's reason and
role check out; opening the file is itself an audited ``decrypt_file`` event, and the values
encrypted inside still need their own per-service, per-attribute permission.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator, MutableSequence
from pathlib import Path
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from errorgate import attributes
from errorgate.codec import decode_line, is_sealed_line
from errorgate.extensions.keyring import KeyringExtension
from errorgate.governance.access import AccessPolicy, AccessPolicyError, Decision, load_access_policy
from errorgate.governance.audit_log import AuditLog, ciphertext_digest
from errorgate.governance.crypto import (
    DecryptError,
    TamperError,
    field_version,
    is_encrypted,
    parse_field_token,
)
from errorgate.governance.identity import Identity, IdentityError, os_identity, token_identity
from errorgate.governance.keyring import Keyring
from errorgate.governance.kms import write_private_file
from errorgate.signals import Signal

from ._governance import (
    Settings,
    actor,
    add_location_args,
    audit_writer,
    open_keyring,
    record_changes,
    service_uid,
)

_POINT_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_SIGNAL_KEYS = {
    "resourceSpans": Signal.TRACES,
    "resourceLogs": Signal.LOGS,
    "resourceMetrics": Signal.METRICS,
}


class Decryptor:
    """Checks reason, role membership and policy, audits, decrypts: one ``attempt`` per value."""

    def __init__(
        self,
        keyring: Keyring,
        policy: AccessPolicy,
        audit: AuditLog,
        *,
        identity: Identity,
        role: str,
        reason: str,
    ) -> None:
        self.keyring = keyring
        self.policy = policy
        self.audit = audit
        self.identity = identity
        self.role = role
        self.reason = reason
        self.counts = {"allowed": 0, "denied": 0, "failed": 0, "tampered": 0}
        self.legacy = 0
        self.last_detail = ""

    def _decision(self, service: str, key: str) -> Decision:
        decision = self.policy.check_reason(self.reason)
        if decision.allowed:
            decision = self.policy.check_role(self.identity, self.role)
        if decision.allowed:
            decision = self.policy.decide(self.role, service=service, key=key)
        return decision

    def attempt(self, token: str, *, service: str, key: str, signal: str, tenant: str) -> str | None:
        try:
            key_id = parse_field_token(token)[0]
        except DecryptError:
            key_id = ""
        decision = self._decision(service, key)
        plaintext: str | None = None
        outcome, detail = ("allowed", decision.detail) if decision.allowed else ("denied", decision.detail)
        if decision.allowed:
            try:
                plaintext = self.keyring.decrypt_field(
                    token, key=key, signal=signal, tenant=tenant, service=service
                )
            except TamperError as e:
                outcome, detail = "tampered", str(e)
            except DecryptError as e:
                outcome, detail = "failed", str(e)
        version = field_version(token)
        if plaintext is not None and version == "v1":
            self.legacy += 1
            detail += "; enc:v1 value (service not bound): re-encrypt"
        self.audit.append(
            {
                "event": "decrypt",
                **actor(self.identity),
                "role": self.role,
                "service": service,
                "field": key,
                "signal": signal,
                "tenant": tenant,
                "key_id": key_id,
                "format": version or "unknown",
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

    def open_file(self, name: str, data: bytes, sealed_lines: int) -> bool:
        """May the caller open a file sealed at rest? Reason and role, audited either way
        (before anything is revealed)."""
        decision = self.policy.check_reason(self.reason)
        if decision.allowed:
            decision = self.policy.check_role(self.identity, self.role)
        outcome = "allowed" if decision.allowed else "denied"
        self.audit.append(
            {
                "event": "decrypt_file",
                **actor(self.identity),
                "role": self.role,
                "file": name,
                "file_sha256": hashlib.sha256(data).hexdigest(),
                "lines": sealed_lines,
                "outcome": outcome,
                "detail": decision.detail,
                "reason": self.reason,
                "policy_sha256": self.policy.sha256,
            }
        )
        if not decision.allowed:
            self.counts["denied"] += 1
            self.last_detail = decision.detail
        return decision.allowed


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


def _check_args(args: argparse.Namespace) -> str | None:
    if (args.value is None) == (args.file is None):
        return "give exactly one of VALUE or --file FILE"
    if args.value is not None and (args.service is None or args.key is None):
        return "VALUE needs --service and --key (the ciphertext is bound to them)"
    return None


def _identity(args: argparse.Namespace, policy: AccessPolicy, audit: AuditLog) -> Identity | None:
    """The caller: a verified ID token when one is given, else the OS user and groups. A token
    that does not verify is refused and audited (None)."""
    if not args.id_token_file:
        return os_identity()
    try:
        text = sys.stdin.read() if args.id_token_file == "-" else Path(args.id_token_file).read_text()
        return token_identity(text.strip(), policy.model.oidc, policy_source=policy.source)
    except (IdentityError, OSError) as e:
        detail = str(e) if isinstance(e, IdentityError) else f"--id-token-file: {e.strerror}"
        refused = Identity("unverified-token", (), "oidc (refused)")
        audit.append(
            {"event": "decrypt", **actor(refused), "role": args.role, "outcome": "denied",
             "detail": detail, "reason": args.reason, "policy_sha256": policy.sha256, "os_user": os_identity().user}
        )  # fmt: skip
        print(f"errorgate decrypt: denied: {detail} (attempt recorded)", file=sys.stderr)
        return None


def _open(args: argparse.Namespace) -> tuple[Decryptor, Settings] | None:
    keyring, settings = open_keyring(args)
    audit = audit_writer(settings)
    try:
        policy = load_access_policy(args.policy, service_uid=service_uid(settings))
    except AccessPolicyError as e:
        audit.append({"event": "policy_refused", **actor(), "role": args.role, "detail": str(e)})
        raise

    identity = _identity(args, policy, audit)
    if identity is None:
        return None
    record_changes(audit, settings, policy, identity)
    return Decryptor(keyring, policy, audit, identity=identity, role=args.role, reason=args.reason), settings


def _run(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem:
        print(f"errorgate decrypt: {problem}", file=sys.stderr)
        return 2
    opened = _open(args)
    if opened is None:
        return 1
    dec = opened[0]
    if args.value is not None:
        plain = dec.attempt(
            args.value, service=args.service, key=args.key, signal=args.signal, tenant=args.tenant
        )
        if plain is None:
            outcome = next(o for o in ("tampered", "denied", "failed") if dec.counts[o])
            print(f"errorgate decrypt: {outcome}: {dec.last_detail} (attempt recorded)", file=sys.stderr)
            return 1
        if dec.legacy:
            print("errorgate decrypt: note: enc:v1 value (service not bound); re-encrypt it", file=sys.stderr)
        print(plain)
        return 0
    return _run_file(args, dec)


def _open_lines(args: argparse.Namespace, dec: Decryptor) -> list[str] | None:
    """The file's OTLP/JSON lines, lines sealed at rest opened (None: refused, or unreadable)."""
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    raw = [line for line in data.splitlines() if line.strip()]
    sealed = sum(1 for line in raw if is_sealed_line(line))
    if sealed and not dec.open_file(args.file, data, sealed):
        print(f"errorgate decrypt: denied: {dec.last_detail} (attempt recorded)", file=sys.stderr)
        return None
    codec = KeyringExtension(dec.keyring).at_rest_codec()
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            lines.append(decode_line(codec, line).decode("utf-8"))
        except ValueError as e:  # tampered, wrong keyring, damaged: say which line, reveal nothing
            print(f"errorgate decrypt: {args.file} line {number}: {e}", file=sys.stderr)
            return None
    return lines


def _run_file(args: argparse.Namespace, dec: Decryptor) -> int:
    lines = _open_lines(args, dec)
    if lines is None:
        return 1
    results = []
    for number, line in enumerate(lines, start=1):
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
    summary = (
        f"decrypted {c['allowed']}, denied {c['denied']}, failed {c['failed']}, tampered {c['tampered']} "
        f"(all attempts recorded)"
    )
    if dec.legacy:
        summary += f"; {dec.legacy} enc:v1 values (service not bound) to re-encrypt"
    if c["denied"] or c["failed"] or c["tampered"]:
        print(f"errorgate decrypt: {summary}; last refusal: {dec.last_detail}", file=sys.stderr)
        return 1
    print(f"errorgate decrypt: {summary}", file=sys.stderr)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "decrypt",
        help="decrypt enc:v2/enc:v1 values (role + reason required, audited)",
        description="Decrypt enc:v2 (and legacy enc:v1) values if the caller holds the role and the role's policy (governance/access.yaml) allows the service "
        "and attribute. Every attempt, allowed or denied, is recorded in <data-dir>/audit/decrypt.log.",
    )
    p.add_argument("value", nargs="?", metavar="VALUE", help="one enc:v2:... (or enc:v1:...) value")
    p.add_argument(
        "--file",
        metavar="FILE",
        help="OTLP/JSON lines (file exporter output, also when encrypted at rest); '-' for stdin",
    )
    p.add_argument("--output", metavar="FILE", help="with --file: where to write the result (default stdout)")
    p.add_argument("--role", required=True, help="one of the roles your identity holds in the access policy")
    p.add_argument("--reason", required=True, help="why (ticket id and purpose); recorded in the audit log")
    p.add_argument(
        "--id-token-file",
        metavar="FILE",
        help="an OIDC ID token (JWT) to identify with instead of the OS user; verified against the "
        "policy's oidc settings ('-' for stdin)",
    )
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
