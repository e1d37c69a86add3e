"""RBAC decrypt through the CLI (identity from the OS or a verified ID token, never typed), the
signed audit log a keyring holder cannot rewrite, and the access-review report."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pwd
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from errorgate import attributes
from errorgate.cli import main
from errorgate.component import PROCESSORS, ComponentContext, Extensions
from errorgate.extensions.keyring import KeyringExtension
from errorgate.governance.audit_log import AuditLog, AuditSigner
from errorgate.governance.keyring import Keyring
from errorgate.otlp.json_format import to_json
from errorgate.signals import Batch
from errorgate.telemetry import Telemetry

EMAIL = "alice@example.com"
GOOD_REASON = "INC-4711 account takeover investigation"


ME = pwd.getpwuid(os.getuid()).pw_name
POLICY = f"""
min_reason_length: 10
roles:
  security-oncall: {{users: [{ME}], services: ["*"], keys: ["enduser.*", "user.*"]}}
  privacy-officer: {{users: [{ME}], services: ["*"], keys: ["*"]}}
  payments-support: {{users: [{ME}], services: ["checkout", "payments-*"], keys: ["enduser.id", "user.id"]}}
  sre: {{users: [{ME}], services: [], keys: []}}
"""


def write_policy(path: Path, text: str) -> Path:
    """A policy as an admin installs it: owned by this (service) user, not writable by others."""
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("ERRORGATE_KEYRING", "ERRORGATE_ACCESS_POLICY", "ERRORGATE_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    # Every role held by the test's OS user, through the environment variable (checked like --policy).
    monkeypatch.setenv("ERRORGATE_ACCESS_POLICY", str(write_policy(tmp_path / "test-access.yaml", POLICY)))


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    return Keyring.open(tmp_path / "keys", env_var=None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def decrypt(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, token: str, *extra: str
) -> tuple[int, str, str]:
    return run(capsys, "decrypt", "--data-dir", str(tmp_path), token, *extra)


def audit_log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit" / "decrypt.log")


def audit_entries(tmp_path: Path, ring: Keyring | None = None) -> list[dict[str, object]]:
    return [e for e in audit_log(tmp_path).entries() if e.get("event") == "decrypt"]


# ---------------------------------------------------------------- decrypt + RBAC


def test_allowed_role_gets_the_value_and_the_attempt_is_recorded(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    token = ring.encrypt_field(EMAIL, key="user.email", signal="traces", tenant="acme", service="checkout")
    rc, out, err = decrypt(
        capsys, tmp_path, token,
        "--role", "security-oncall", "--reason", GOOD_REASON,
        "--service", "checkout", "--key", "user.email", "--tenant", "acme",
    )  # fmt: skip
    assert (rc, out) == (0, EMAIL + "\n"), err
    [entry] = audit_entries(tmp_path, ring)
    assert entry["outcome"] == "allowed" and entry["user"] == ME and entry["role"] == "security-oncall"
    assert entry["service"] == "checkout" and entry["field"] == "user.email" and entry["tenant"] == "acme"
    assert entry["key_id"] == ring.active_key_id() and entry["reason"] == GOOD_REASON and entry["seq"] == 2
    policy = (tmp_path / "test-access.yaml").read_bytes()
    assert entry["policy_sha256"] == hashlib.sha256(policy).hexdigest()
    assert entry["identity_source"] == "os" and entry["format"] == "v2" and entry["sig"]
    # The first sight of the policy is itself an audited event, before the decrypt.
    first = audit_log(tmp_path).entries()[0]
    assert first["event"] == "policy_change" and first["policy_sha256"] == entry["policy_sha256"]
    log_bytes = (tmp_path / "audit" / "decrypt.log").read_bytes()
    assert EMAIL.encode() not in log_bytes and token.encode() not in log_bytes
    assert (tmp_path / "audit" / "decrypt.log").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("role", "service", "key", "reason", "why"),
    [
        (
            "sre",
            "checkout",
            "user.email",
            GOOD_REASON,
            "role sre may not decrypt values of service 'checkout'",
        ),
        ("payments-support", "search", "user.id", GOOD_REASON, "may not decrypt values of service 'search'"),
        ("payments-support", "checkout", "user.email", GOOD_REASON, "may not decrypt attribute 'user.email'"),
        ("security-oncall", "checkout", "user.email", "debug", "reason too short"),
        ("intern", "checkout", "user.email", GOOD_REASON, "unknown role 'intern'"),
    ],
)
def test_refused_attempts_exit_nonzero_and_are_recorded(
    tmp_path: Path,
    ring: Keyring,
    capsys: pytest.CaptureFixture[str],
    role: str,
    service: str,
    key: str,
    reason: str,
    why: str,
) -> None:
    token = ring.encrypt_field(EMAIL, key=key, signal="traces", tenant="", service=service)
    rc, out, err = decrypt(
        capsys, tmp_path, token, "--role", role, "--reason", reason, "--service", service, "--key", key
    )
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and why in err and "denied" in err
    assert EMAIL not in err
    [entry] = audit_entries(tmp_path, ring)
    assert entry["outcome"] == "denied" and entry["role"] == role and why in str(entry["detail"])


def test_allowed_role_with_wrong_context_fails_and_is_recorded(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    token = ring.encrypt_field(EMAIL, key="user.email", signal="traces", tenant="acme", service="checkout")
    rc, out, err = decrypt(
        capsys, tmp_path, token,
        "--role", "privacy-officer", "--reason", GOOD_REASON, "--service", "checkout", "--key", "user.email",
        "--tenant", "globex",
    )  # fmt: skip
    assert rc != 0 and out == "" and "tampered" in err and "authentication failed" in err
    [entry] = audit_entries(tmp_path, ring)
    assert entry["outcome"] == "tampered"


def test_value_of_one_service_cannot_be_decrypted_by_claiming_another(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's bypass: payments-support may read enduser.id of checkout, not of patient-records."""
    token = ring.encrypt_field(
        "patient-4711", key="enduser.id", signal="traces", tenant="", service="patient-records"
    )
    common = ["--role", "payments-support", "--reason", GOOD_REASON, "--key", "enduser.id"]
    rc, out, err = decrypt(capsys, tmp_path, token, *common, "--service", "patient-records")
    assert rc == 1 and out == "" and "may not decrypt values of service 'patient-records'" in err
    rc, out, err = decrypt(capsys, tmp_path, token, *common, "--service", "checkout")
    assert rc == 1 and out == "" and "patient-4711" not in err
    assert "tampered" in err and "service" in err
    denied, tampered = audit_entries(tmp_path)
    assert (denied["outcome"], denied["service"]) == ("denied", "patient-records")
    assert (tampered["outcome"], tampered["service"], tampered["field"]) == (
        "tampered",
        "checkout",
        "enduser.id",
    )
    assert b"patient-4711" not in (tmp_path / "audit" / "decrypt.log").read_bytes()


def test_custom_policy_file_is_used_and_hashed(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write_policy(
        tmp_path / "access.yaml",
        f"min_reason_length: 3\nroles:\n  dpo: {{users: [{ME}], services: ['*'], keys: ['user.*']}}\n",
    )
    token = ring.encrypt_field(EMAIL, key="user.email", signal="logs", tenant="", service="checkout")
    rc, out, _ = decrypt(
        capsys, tmp_path, token,
        "--policy", str(policy), "--role", "dpo", "--reason", "SAR-9",
        "--service", "checkout", "--key", "user.email", "--signal", "logs",
    )  # fmt: skip
    assert (rc, out) == (0, EMAIL + "\n")
    assert (
        audit_entries(tmp_path, ring)[0]["policy_sha256"] == hashlib.sha256(policy.read_bytes()).hexdigest()
    )
    write_policy(policy, "roles:\n  dpo: {services: ['*'], keyz: []}\n")
    rc, _, err = decrypt(
        capsys, tmp_path, token,
        "--policy", str(policy), "--role", "dpo", "--reason", "x" * 20, "--service", "x", "--key", "user.email",
    )  # fmt: skip
    assert rc != 0 and "roles.dpo.keyz: unknown key" in err


def test_decrypt_file_of_otlp_json_lines_per_role(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    factory = PROCESSORS.get("encrypt")
    assert factory is not None
    ctx = ComponentContext(
        "encrypt",
        tmp_path,
        Telemetry(),
        logging.getLogger("t"),
        extensions=Extensions({"keyring": KeyringExtension(ring)}),
    )
    proc = factory.create(factory.config_model.model_validate({}), ctx)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attributes.set_value(rs.resource.attributes, "service.name", "checkout")
    attributes.set_value(rs.resource.attributes, "tenant.id", "acme")
    span = rs.scope_spans.add().spans.add(name="pay", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    attributes.set_value(span.attributes, "user.id", "u-77")
    attributes.set_value(span.attributes, "user.email", EMAIL)
    encrypted = proc.process(Batch.of(req)).batches[0].request
    exported = tmp_path / "traces.jsonl"
    exported.write_text(to_json(encrypted) + "\n")
    assert EMAIL not in exported.read_text()

    # payments-support may see user.id on checkout, not user.email: partial result, exit 1.
    rc, out, err = run(
        capsys, "decrypt", "--data-dir", str(tmp_path), "--file", str(exported),
        "--role", "payments-support", "--reason", GOOD_REASON,
    )  # fmt: skip
    assert rc == 1 and "decrypted 1, denied 1" in err
    span_out = json.loads(out)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    got = {a["key"]: a["value"]["stringValue"] for a in span_out["attributes"]}
    assert got["user.id"] == "u-77" and got["user.email"].startswith("enc:v2:")

    target = tmp_path / "decrypted.jsonl"
    rc, out, err = run(
        capsys, "decrypt", "--data-dir", str(tmp_path), "--file", str(exported), "--output", str(target),
        "--role", "privacy-officer", "--reason", GOOD_REASON,
    )  # fmt: skip
    assert rc == 0 and out == "" and "decrypted 2, denied 0" in err
    assert EMAIL in target.read_text() and target.stat().st_mode & 0o777 == 0o600
    outcomes = [(e["role"], e["field"], e["outcome"]) for e in audit_entries(tmp_path, ring)]
    assert sorted(outcomes) == sorted(
        [
            ("payments-support", "user.id", "allowed"),
            ("payments-support", "user.email", "denied"),
            ("privacy-officer", "user.id", "allowed"),
            ("privacy-officer", "user.email", "allowed"),
        ]
    )


def test_keys_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "keys", "init", "--data-dir", str(tmp_path))
    assert rc == 0 and "created" in out
    assert (tmp_path / "audit" / "signing.key").stat().st_mode & 0o777 == 0o600
    rc, out, _ = run(capsys, "keys", "init", "--data-dir", str(tmp_path))
    assert rc == 0 and "already exists" in out
    first = Keyring.open(tmp_path / "keys", create=False, env_var=None).active_key_id()
    token = Keyring.open(tmp_path / "keys", env_var=None).encrypt_field(
        "v", key="k", signal="traces", tenant="", service="s"
    )
    rc, out, _ = run(capsys, "keys", "rotate", "--data-dir", str(tmp_path))
    assert rc == 0 and first in out
    rc, out, _ = run(capsys, "keys", "list", "--data-dir", str(tmp_path), "--format", "json")
    listed = {k["id"]: k["status"] for k in json.loads(out)}
    assert listed[first] == "retired" and list(listed.values()).count("active") == 1
    master = (tmp_path / "keys" / "master.key").read_text().strip()
    assert master not in out
    rc, _, err = run(capsys, "keys", "disable", "--data-dir", str(tmp_path), first)
    assert rc != 0 and "--yes" in err
    rc, _, _ = run(capsys, "keys", "disable", "--data-dir", str(tmp_path), first, "--yes")
    assert rc == 0
    ring = Keyring.open(tmp_path / "keys", create=False, env_var=None)
    with pytest.raises(ValueError, match="disabled"):
        ring.decrypt_field(token, key="k", signal="traces", tenant="", service="s")
    active = ring.active_key_id()
    rc, _, err = run(capsys, "keys", "disable", "--data-dir", str(tmp_path), active, "--yes")
    assert rc != 0 and "rotate first" in err and len(err.strip().splitlines()) == 1
    events = [(e["event"], e.get("key_id")) for e in audit_log(tmp_path).entries()]
    assert events == [("key_init", first), ("key_rotate", active), ("key_disable", first)]
    assert run(capsys, "audit", "verify", "--data-dir", str(tmp_path))[0] == 0


# ---------------------------------------------------------------- audit chain


def _writer(tmp_path: Path) -> AuditLog:
    return AuditLog(
        tmp_path / "audit" / "decrypt.log", signer=AuditSigner.open(tmp_path / "audit" / "signing.key")
    )


def _five_entries(tmp_path: Path, ring: Keyring | None = None) -> AuditLog:
    log = _writer(tmp_path)
    for i in range(5):
        log.append({"user": f"u{i}", "role": "security-oncall", "service": "checkout", "field": "user.email",
                    "outcome": "allowed" if i % 2 else "denied", "reason": GOOD_REASON})  # fmt: skip
    return log


def _verify(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[int, str, str]:
    """A verifier holding only the public key, the log and the witness: no keyring, no private key."""
    elsewhere = tmp_path / "verifier"
    elsewhere.mkdir(exist_ok=True)
    for name in ("decrypt.log", "decrypt.log.witness", "signing.key.pub"):
        if (tmp_path / "audit" / name).exists():
            shutil.copy(tmp_path / "audit" / name, elsewhere / name)
    return run(
        capsys, "audit", "verify", "--data-dir", str(elsewhere / "no-data-dir"),
        "--log", str(elsewhere / "decrypt.log"), "--witness", str(elsewhere / "decrypt.log.witness"),
        "--public-key", str(elsewhere / "signing.key.pub"),
    )  # fmt: skip


def test_intact_chain_verifies_with_the_public_key_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _five_entries(tmp_path)
    assert (tmp_path / "audit" / "signing.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "keys").exists()  # no data keyring anywhere
    rc, out, err = _verify(capsys, tmp_path)
    assert rc == 0 and "5 entries" in out and "witnessed up to seq 5" in out, err


def _rewrite(log: AuditLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_edited_entry_is_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _five_entries(tmp_path)
    lines = log.lines()
    lines[2] = lines[2].replace(b'"outcome":"denied"', b'"outcome":"allowed"')
    _rewrite(log, lines)
    rc, _, err = _verify(capsys, tmp_path)
    assert rc == 1 and "first bad sequence number 3" in err and "modified" in err


def test_deleted_entry_is_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _five_entries(tmp_path)
    lines = log.lines()
    del lines[1]
    _rewrite(log, lines)
    rc, _, err = _verify(capsys, tmp_path)
    assert rc == 1 and "first bad sequence number 2" in err


def test_reordered_entries_are_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _five_entries(tmp_path)
    lines = log.lines()
    lines[3], lines[2] = lines[2], lines[3]
    _rewrite(log, lines)
    rc, _, err = _verify(capsys, tmp_path)
    assert rc == 1 and "first bad sequence number 3" in err


def test_truncated_tail_is_detected_by_the_witness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _five_entries(tmp_path)
    original = log.lines()
    _rewrite(log, original[:3])
    rc, _, err = _verify(capsys, tmp_path)
    assert rc == 1 and "first bad sequence number 4" in err and "truncated" in err
    # Removing the whole witness does not help either: signed entries need one.
    (tmp_path / "audit" / "decrypt.log.witness").unlink()
    rc, _, err = _verify(capsys, tmp_path)
    assert rc == 1 and "witness" in err


def test_a_keyring_holder_cannot_rewrite_the_log(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data keyring (which decrypts) gives no way to forge entries: neither re-signing with a
    key of one's own, nor passing an edited entry off as a legacy HMAC entry keyed from the ring."""
    log = _five_entries(tmp_path, ring)
    original = log.lines()
    # 1. Edit entry 3 and sign it with an Ed25519 key of the attacker's own.
    forged = json.loads(original[2])
    forged["outcome"] = "allowed"
    mallory = AuditSigner.open(tmp_path / "mallory.key")
    body = {k: v for k, v in forged.items() if k not in ("sig", "signer")}
    _rewrite(log, [*original[:2], json.dumps(mallory.sign(body), sort_keys=True, separators=(",", ":")).encode(),
                   *original[3:]])  # fmt: skip
    rc, _, err = _verify(capsys, tmp_path)
    assert rc == 1 and "first bad sequence number 3" in err and "another key" in err
    # 2. Turn the edited entry 3 into a legacy entry with a valid HMAC from the data keyring.
    kid, key = ring.hmac_key("audit-log")
    legacy = {k: v for k, v in forged.items() if k not in ("sig", "signer")} | {"hmac_key_id": kid}
    canonical = json.dumps(legacy, sort_keys=True, separators=(",", ":")).encode()
    legacy["hmac"] = hmac.new(key, canonical, hashlib.sha256).hexdigest()
    _rewrite(
        log,
        [*original[:2], json.dumps(legacy, sort_keys=True, separators=(",", ":")).encode(), *original[3:]],
    )
    rc, _, err = _verify(capsys, tmp_path)
    assert rc == 1 and "first bad sequence number 3" in err and "unsigned" in err
    # 3. Delete entry 4 and renumber entry 5 to hide the gap: its signature breaks.
    renumbered = json.loads(original[4]) | {"seq": 4}
    _rewrite(log, [*original[:3], json.dumps(renumbered, sort_keys=True, separators=(",", ":")).encode()])
    rc, _, err = _verify(capsys, tmp_path)
    assert rc == 1 and "first bad sequence number 4" in err
    # Restored, the log verifies and appending continues the chain.
    _rewrite(log, original)
    log.append({"user": "u5", "outcome": "allowed"})
    assert _verify(capsys, tmp_path)[0] == 0


def test_old_hmac_logs_are_still_read_and_reported(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log written before signing (HMAC entries keyed from the data keyring) keeps verifying;
    new entries continue its chain, and the report says which entries are legacy."""
    path = tmp_path / "audit" / "decrypt.log"
    path.parent.mkdir(parents=True)
    prev, lines = "0" * 64, []
    kid, key = ring.hmac_key("audit-log")
    for seq in (1, 2):
        entry = {"seq": seq, "time": f"2026-01-0{seq}T10:00:00Z", "prev": prev, "hmac_key_id": kid,
                 "user": "old", "role": "sre", "outcome": "denied"}  # fmt: skip
        entry["hmac"] = hmac.new(key, json.dumps(entry, sort_keys=True, separators=(",", ":")).encode(),
                                 hashlib.sha256).hexdigest()  # fmt: skip
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        lines.append(line)
        prev = hashlib.sha256(line).hexdigest()
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    _writer(tmp_path).append({"user": "new", "outcome": "allowed"})
    rc, out, err = _verify(capsys, tmp_path)
    assert rc == 0 and "3 entries" in out and "seq 1..2 are legacy HMAC entries" in out, err
    assert "HMACs not checked (no keyring)" in out and "sealed by the first signed entry" in out
    # With the keyring at hand (the data dir) the legacy HMACs are checked too.
    rc, out, _ = run(capsys, "audit", "verify", "--data-dir", str(tmp_path))
    assert rc == 0 and "HMACs checked with the data keyring" in out
    # Editing a legacy entry breaks the chain the first signature sealed.
    _rewrite(AuditLog(path), [lines[0].replace(b'"denied"', b'"allowed"'), *AuditLog(path).lines()[1:]])
    assert _verify(capsys, tmp_path)[0] == 1


# ---------------------------------------------------------------- access review


def test_report_flags_denials_volume_and_hours(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _writer(tmp_path)
    day0 = (datetime.now(UTC) - timedelta(days=20)).replace(hour=10, minute=0, second=0, microsecond=0)

    def add(
        user: str, role: str, when: datetime, outcome: str = "allowed", field: str = "user.email"
    ) -> None:
        detail = "" if outcome == "allowed" else f"role {role} may not decrypt"
        record = {"user": user, "role": role, "service": "checkout", "field": field, "outcome": outcome}
        log.append({**record, "detail": detail, "reason": GOOD_REASON}, now=when)

    for d in range(6):  # bob: one a day in office hours...
        add("bob", "security-oncall", day0 + timedelta(days=d))
    for m in range(12):  # ...then 12 in one day
        add("bob", "security-oncall", day0 + timedelta(days=7, minutes=m))
    add("carol", "privacy-officer", day0.replace(hour=3), field="enduser.id")  # at 03:00
    add("dave", "sre", day0 + timedelta(days=1), outcome="denied")
    add("erin", "security-oncall", day0 - timedelta(days=200))  # outside the 90-day window

    rc, out, err = run(
        capsys, "audit", "report", "--data-dir", str(tmp_path), "--since", "90d", "--format", "json",
        "--timezone", "UTC",
    )  # fmt: skip
    assert rc == 0, err
    report = json.loads(out)
    assert report["audit_chain"]["ok"] is True
    assert report["totals"] == {"attempts": 20, "allowed": 19, "denied": 1}
    assert set(report["by_user"]) == {"bob", "carol", "dave"}
    assert report["by_user"]["bob"]["allowed"] == 18 and report["by_user"]["dave"] == {
        "denied": 1,
        "roles": ["sre"],
    }
    assert report["by_role"]["sre"] == {"denied": 1}
    assert report["by_field"]["checkout/enduser.id"] == {"allowed": 1}
    [denied] = report["denied"]
    assert denied["user"] == "dave" and denied["role"] == "sre" and denied["field"] == "checkout/user.email"
    assert [(v["user"], v["day"], v["count"]) for v in report["unusual_volume"]] == [
        ("bob", (day0 + timedelta(days=7)).date().isoformat(), 12)
    ]
    assert [(h["user"], h["time"][11:16]) for h in report["unusual_hours"]] == [("carol", "03:00")]

    rc, text, _ = run(capsys, "audit", "report", "--data-dir", str(tmp_path), "--timezone", "UTC")
    assert rc == 0
    assert "Denied or failed attempts: 1" in text and "dave as sre" in text
    assert "bob on" in text and "12 attempts" in text
    assert "Outside working hours (07:00-20:00): 1" in text and "carol as privacy-officer" in text
    assert "audit chain: verified (21 entries)" in text

    # A broken chain is reported in the review and makes it exit non-zero.
    lines = log.lines()
    lines[0] = lines[0].replace(b'"bob"', b'"bib"')
    log.path.write_bytes(b"".join(line + b"\n" for line in lines))
    rc, text, _ = run(capsys, "audit", "report", "--data-dir", str(tmp_path), "--timezone", "UTC")
    assert rc == 1 and "BROKEN at seq 1" in text


def test_report_rejects_bad_arguments(
    tmp_path: Path, ring: Keyring, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, needle in [
        (["--since", "ninety days"], "--since"),
        (["--timezone", "Mars/Olympus"], "--timezone"),
        (["--hours", "20-7"], "--hours"),
    ]:
        rc, _, err = run(capsys, "audit", "report", "--data-dir", str(tmp_path), *args)
        assert rc != 0 and needle in err and len(err.strip().splitlines()) == 1


def test_commands_find_keyring_and_data_dir_from_the_gateway_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, keys = tmp_path / "data", tmp_path / "elsewhere" / "keys"
    config = tmp_path / "errorgate.yaml"
    config.write_text(
        "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
        f"processors: {{encrypt: {{keyring: {keys}}}}}\n"
        "exporters: {file: {path: ./out}}\n"
        f"service: {{data_dir: {data}, pipelines: {{logs: {{receivers: [otlp], processors: [encrypt], "
        "exporters: [file]}}}\n"
    )
    assert run(capsys, "keys", "init", "--config", str(config))[0] == 0
    assert (keys / "keyring.json").exists() and not (data / "keys").exists()
    ring = Keyring.open(keys, create=False, env_var=None)
    token = ring.encrypt_field(EMAIL, key="user.email", signal="logs", tenant="", service="checkout")
    rc, out, err = run(
        capsys, "decrypt", "--config", str(config), token, "--signal", "logs",
        "--role", "privacy-officer", "--reason", GOOD_REASON, "--service", "checkout", "--key", "user.email",
    )  # fmt: skip
    assert (rc, out) == (0, EMAIL + "\n"), err
    assert (data / "audit" / "decrypt.log").exists()
    assert run(capsys, "audit", "verify", "--config", str(config))[0] == 0
