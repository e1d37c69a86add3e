"""Who may decrypt is decided from an identity the caller cannot type: the OS user and groups,
or a verified OIDC ID token; the access policy itself must be a file only root or the service
user could have written; policy changes are audited and show in the access review."""

from __future__ import annotations

import grp
import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from errorgate.cli import main
from errorgate.governance.audit_log import AuditLog
from errorgate.governance.keyring import Keyring

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name
REASON = "INC-4711 account takeover investigation"
ISSUER = "https://login.example.test/"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ERRORGATE_KEYRING", "ERRORGATE_ACCESS_POLICY", "ERRORGATE_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)


def policy(tmp_path: Path, body: str, name: str = "access.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    path.chmod(0o644)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def decrypt_entries(tmp_path: Path) -> list[dict[str, Any]]:
    return [e for e in AuditLog(tmp_path / "audit" / "decrypt.log").entries() if e.get("event") == "decrypt"]


@pytest.fixture
def token(tmp_path: Path) -> str:
    ring = Keyring.open(tmp_path / "keys", env_var=None)
    return ring.encrypt_field("u-77", key="user.id", signal="traces", tenant="", service="checkout")


def _decrypt(tmp_path: Path, token: str, pol: Path, role: str, *extra: str) -> list[str]:
    return ["decrypt", "--data-dir", str(tmp_path), "--policy", str(pol), "--role", role, "--reason", REASON,
            "--service", "checkout", "--key", "user.id", *extra, token]  # fmt: skip


# ---------------------------------------------------------------- OS identity


def test_a_role_the_os_user_does_not_hold_is_refused_and_audited(
    tmp_path: Path, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pol = policy(
        tmp_path,
        "roles:\n"
        f"  support: {{groups: [{MY_GROUP}], services: [checkout], keys: [user.id]}}\n"
        "  privacy-officer: {groups: [errorgate-privacy-nobody-here], services: ['*'], keys: ['*']}\n",
    )
    rc, out, err = run(capsys, *_decrypt(tmp_path, token, pol, "privacy-officer"))
    assert rc == 1 and out == "" and "u-77" not in err
    assert f"{ME} (os) does not hold role privacy-officer (holds: support)" in err
    rc, out, _ = run(capsys, *_decrypt(tmp_path, token, pol, "support"))
    assert (rc, out) == (0, "u-77\n")
    forged, allowed = decrypt_entries(tmp_path)
    assert (forged["outcome"], forged["role"], forged["user"]) == ("denied", "privacy-officer", ME)
    assert MY_GROUP in forged["groups"] and forged["identity_source"] == "os"
    assert (allowed["outcome"], allowed["role"]) == ("allowed", "support")


def test_user_cannot_be_typed_on_the_command_line(tmp_path: Path, token: str) -> None:
    pol = policy(tmp_path, f"roles:\n  r: {{users: [{ME}], services: ['*'], keys: ['*']}}\n")
    with pytest.raises(SystemExit):
        main([*_decrypt(tmp_path, token, pol, "r"), "--user", "alice.sec"])


# ---------------------------------------------------------------- policy file


@pytest.mark.parametrize("via", ["--policy", "env"])
def test_a_policy_others_can_write_is_refused_naming_the_file(
    tmp_path: Path, token: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    pol = policy(tmp_path, f"roles:\n  r: {{users: [{ME}], services: ['*'], keys: ['*']}}\n")
    pol.chmod(0o666)
    argv = _decrypt(tmp_path, token, pol, "r")
    if via == "env":
        monkeypatch.setenv("ERRORGATE_ACCESS_POLICY", str(pol))
        i = argv.index("--policy")
        del argv[i : i + 2]
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and str(pol) in err and "writable by group or others" in err
    assert len(err.strip().splitlines()) == 1
    assert decrypt_entries(tmp_path) == []  # nothing was decrypted...
    [refused] = [e for e in AuditLog(tmp_path / "audit" / "decrypt.log").entries()]
    assert refused["event"] == "policy_refused" and str(pol) in refused["detail"]  # ...and it is on record


@pytest.mark.skipif(os.getuid() != 0, reason="changing a file's owner needs root")
def test_a_policy_owned_by_someone_else_is_refused(
    tmp_path: Path, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pol = policy(tmp_path, f"roles:\n  r: {{users: [{ME}], services: ['*'], keys: ['*']}}\n")
    os.chown(pol, 54321, 54321)
    rc, _, err = run(capsys, *_decrypt(tmp_path, token, pol, "r"))
    assert rc == 2 and str(pol) in err and "owned by uid 54321" in err


def test_policy_changes_are_audited_and_in_the_review(
    tmp_path: Path, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pol = policy(tmp_path, f"roles:\n  r: {{users: [{ME}], services: ['*'], keys: ['*']}}\n")
    assert run(capsys, *_decrypt(tmp_path, token, pol, "r"))[0] == 0
    assert run(capsys, *_decrypt(tmp_path, token, pol, "r"))[0] == 0  # unchanged: no new event
    first = AuditLog(tmp_path / "audit" / "decrypt.log").last_event("policy_change")
    assert first is not None
    policy(tmp_path, f"min_reason_length: 20\nroles:\n  r: {{users: [{ME}], services: ['*'], keys: ['*']}}\n")
    assert run(capsys, *_decrypt(tmp_path, token, pol, "r"))[0] == 0
    rc, out, err = run(capsys, "audit", "report", "--data-dir", str(tmp_path), "--format", "json")
    assert rc == 0, err
    report = json.loads(out)
    changes = [c for c in report["changes"] if c["event"] == "policy_change"]
    assert len(changes) == 2 and changes[0]["policy_sha256"] == first["policy_sha256"]
    assert changes[1]["previous_sha256"] == first["policy_sha256"] and changes[1]["user"] == ME
    assert set(report["policies_in_force"]) == {c["policy_sha256"] for c in changes}
    rc, text, _ = run(capsys, "audit", "report", "--data-dir", str(tmp_path))
    assert (
        "Policy changes, rules changes and key operations: 2" in text and changes[1]["policy_sha256"] in text
    )


# ---------------------------------------------------------------- OIDC ID tokens


@pytest.fixture
def oidc(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    pol = policy(
        tmp_path,
        f"oidc: {{issuer: '{ISSUER}', audience: errorgate, jwks_file: '{jwks}', leeway_seconds: 0}}\n"
        "roles:\n"
        "  support: {users: ['oidc:alice@example.test'], services: [checkout], keys: [user.id]}\n"
        "  privacy-officer: {groups: ['oidc:dpo'], services: ['*'], keys: ['*']}\n",
    )
    return key, pol


def _id_token(tmp_path: Path, key: Any, **overrides: Any) -> Path:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "errorgate", "sub": "alice@example.test", "groups": ["support"],
              "iat": now, "exp": now + 300} | overrides  # fmt: skip
    path = tmp_path / "id-token"
    path.write_text(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"}))
    return path


def test_a_verified_id_token_identifies_the_caller(
    tmp_path: Path, token: str, oidc: tuple[Any, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, pol = oidc
    id_token = _id_token(tmp_path, key)
    rc, out, err = run(capsys, *_decrypt(tmp_path, token, pol, "support", "--id-token-file", str(id_token)))
    assert (rc, out) == (0, "u-77\n"), err
    rc, _, err = run(
        capsys, *_decrypt(tmp_path, token, pol, "privacy-officer", "--id-token-file", str(id_token))
    )
    assert rc == 1 and "oidc:alice@example.test" in err and "does not hold role privacy-officer" in err
    allowed, forged = decrypt_entries(tmp_path)
    assert allowed["user"] == "oidc:alice@example.test" and allowed["identity_source"] == f"oidc {ISSUER}"
    assert allowed["groups"] == ["oidc:support"] and forged["outcome"] == "denied"
    assert id_token.read_text() not in (tmp_path / "audit" / "decrypt.log").read_text()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"aud": "another-app"}, "audience is not 'errorgate'"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"iss": "https://evil.example.test/"}, "issuer is not"),
        ("other-key", "signature does not verify"),
    ],
)
def test_a_bad_id_token_is_refused_and_audited(
    tmp_path: Path,
    token: str,
    oidc: tuple[Any, Path],
    capsys: pytest.CaptureFixture[str],
    change: Any,
    why: str,
) -> None:
    key, pol = oidc
    if change == "other-key":
        id_token = _id_token(tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    else:
        id_token = _id_token(tmp_path, key, **change)
    rc, out, err = run(capsys, *_decrypt(tmp_path, token, pol, "support", "--id-token-file", str(id_token)))
    assert rc == 1 and out == "" and why in err and "u-77" not in err
    [entry] = decrypt_entries(tmp_path)
    assert entry["outcome"] == "denied" and why in entry["detail"] and entry["user"] == "unverified-token"


# ---------------------------------------------------------------- legacy ciphertexts, rules changes


def test_rules_audit_reports_enc_v1_values_for_reencryption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from errorgate import attributes
    from errorgate.otlp.json_format import to_json

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attributes.set_value(rs.resource.attributes, "service.name", "patient-records")
    span = rs.scope_spans.add().spans.add(name="read", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    attributes.set_value(span.attributes, "enduser.id", "enc:v1:k1-aaaa:AAAA")
    attributes.set_value(span.attributes, "user.id", "enc:v2:k1-aaaa:BBBB")
    exported = tmp_path / "traces.jsonl"
    exported.write_text(to_json(req) + "\n")
    rc, out, err = run(capsys, "rules", "audit", "--scan", str(exported), "--format", "json")
    assert rc == 0, err
    assert json.loads(out)["legacy_ciphertexts"] == [
        {"file": str(exported), "service": "patient-records", "key": "enduser.id", "values": 1}
    ]
    rc, out, _ = run(capsys, "rules", "audit", "--scan", str(exported))
    assert "re-encrypt as enc:v2" in out and "service patient-records key enduser.id: 1" in out


def test_a_rules_change_in_the_gateway_config_is_audited(
    tmp_path: Path, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pol = policy(tmp_path, f"roles:\n  r: {{users: [{ME}], services: ['*'], keys: ['*']}}\n")
    config = tmp_path / "errorgate.yaml"

    def write(keys: str) -> None:
        config.write_text(
            "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
            f"processors: {{encrypt: {{keyring: {tmp_path / 'keys'}, rules: [{{keys: [{keys}]}}]}}}}\n"
            "exporters: {file: {path: ./out}}\n"
            f"service: {{data_dir: {tmp_path}, pipelines: {{traces: {{receivers: [otlp], processors: [encrypt], "
            "exporters: [file]}}}\n"
        )

    argv = _decrypt(tmp_path, token, pol, "r")
    argv[argv.index("--data-dir") : argv.index("--data-dir") + 2] = ["--config", str(config)]
    write("'user.*'")
    assert run(capsys, *argv)[0] == 0
    write("'user.*', 'enduser.*'")
    assert run(capsys, *argv)[0] == 0
    changes = [
        e for e in AuditLog(tmp_path / "audit" / "decrypt.log").entries() if e["event"] == "rules_change"
    ]
    assert len(changes) == 2 and changes[1]["previous_sha256"] == changes[0]["rules_sha256"]
