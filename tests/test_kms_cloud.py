"""Envelope encryption with a real KMS protocol: AWS KMS (moto in server mode on loopback, the
real boto3 client) and Vault transit (hvac against a stub of Vault's transit HTTP API)."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from errorgate.cli import main
from errorgate.governance.keyring import Keyring, KeyringError
from errorgate.governance.kms import AwsKms, VaultTransitKms

CTX = {"key": "user.email", "signal": "traces", "tenant": "acme", "service": "checkout"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ERRORGATE_KEYRING", "ERRORGATE_ACCESS_POLICY", "ERRORGATE_DATA_DIR", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")


def _kms_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("kms", region_name="eu-west-1", endpoint_url=endpoint)


def _config(tmp_path: Path, kms: dict[str, str]) -> Path:
    kms_yaml = ", ".join(f"{k}: '{v}'" for k, v in kms.items())
    path = tmp_path / "errorgate.yaml"
    path.write_text(
        "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
        f"extensions: {{keyring: {{kms: {{{kms_yaml}}}}}}}\n"
        "processors: {encrypt: {}}\n"
        "exporters: {file: {path: ./out}}\n"
        f"service: {{data_dir: {tmp_path / 'data'}, extensions: [keyring], pipelines: {{logs: {{receivers: [otlp], "
        "processors: [encrypt], exporters: [file]}}}\n"
    )
    return path


def test_aws_kms_envelope_round_trip_and_rotation_rewraps_without_reencrypting(
    tmp_path: Path, kms_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = _kms_client(kms_endpoint)
    key_a = client.create_key(Description="errorgate a")["KeyMetadata"]["KeyId"]
    key_b = client.create_key(Description="errorgate b")["KeyMetadata"]["KeyId"]
    config = _config(tmp_path, {"provider": "aws", "key_id": key_a, "endpoint_url": kms_endpoint})

    assert main(["keys", "init", "--config", str(config)]) == 0, capsys.readouterr().err
    keys_dir = tmp_path / "data" / "keys"
    assert not (keys_dir / "master.key").exists()  # no local master key: AWS KMS wraps the data keys
    doc = json.loads((keys_dir / "keyring.json").read_text())
    assert doc["kms"] == "aws"
    ring = Keyring.open(keys_dir, create=False, env_var=None, kms=AwsKms(key_a, endpoint_url=kms_endpoint))
    token = ring.encrypt_field("alice@example.com", **CTX)
    wrapped_before = [k["wrapped"] for k in doc["keys"]]

    # The wrapped data key really is a KMS ciphertext of key A: KMS itself decrypts it.
    plain = client.decrypt(
        CiphertextBlob=base64.b64decode(wrapped_before[0]),
        EncryptionContext={"errorgate": "keyring-data-key"},
    )
    assert plain["KeyId"].endswith(key_a)

    capsys.readouterr()
    assert main(["keys", "rewrap", "--config", str(config), "--to-key-id", key_b]) == 0
    assert "re-wrapped 1 data keys" in capsys.readouterr().out
    doc = json.loads((keys_dir / "keyring.json").read_text())
    assert [k["wrapped"] for k in doc["keys"]] != wrapped_before
    # The old ciphertext (not re-encrypted) decrypts through key B; key A no longer opens the ring.
    via_b = Keyring.open(keys_dir, create=False, env_var=None, kms=AwsKms(key_b, endpoint_url=kms_endpoint))
    assert via_b.decrypt_field(token, **CTX) == "alice@example.com"
    with pytest.raises(KeyringError, match="cannot unwrap"):
        Keyring.open(keys_dir, create=False, env_var=None, kms=AwsKms(key_a, endpoint_url=kms_endpoint))
    # Both key operations are in the signed audit log.
    capsys.readouterr()
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "data")]) == 0
    log = (tmp_path / "data" / "audit" / "decrypt.log").read_text()
    assert '"event":"key_init"' in log and '"event":"key_rewrap"' in log


def test_aws_kms_unreachable_names_the_key(tmp_path: Path) -> None:
    kms = AwsKms("alias/nope", endpoint_url=f"http://127.0.0.1:{_free_port()}", region="eu-west-1")
    with pytest.raises(KeyringError, match=r"kms\.key_id alias/nope"):
        Keyring.open(tmp_path / "keys", env_var=None, kms=kms)


# ---------------------------------------------------------------- Vault transit (stub)


class _Transit:
    """Vault's transit API as documented (developer.hashicorp.com/vault/api-docs/secret/transit):
    POST /v1/<mount>/encrypt/:name {"plaintext": base64} -> {"data": {"ciphertext": "vault:vN:..."}},
    POST /v1/<mount>/decrypt/:name {"ciphertext"} -> {"data": {"plaintext": base64}},
    POST /v1/<mount>/keys/:name/rotate; every request carries X-Vault-Token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.version = 1
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def handle(self, path: str, token: str | None, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append((path, body))
        if token != self.token:
            return 403, {"errors": ["permission denied"]}
        if path == "/v1/transit/encrypt/errorgate":
            base64.b64decode(body["plaintext"], validate=True)
            secret = base64.b64encode(body["plaintext"].encode()[::-1]).decode()
            return 200, {
                "data": {"ciphertext": f"vault:v{self.version}:{secret}", "key_version": self.version}
            }
        if path == "/v1/transit/decrypt/errorgate":
            _, version, secret = body["ciphertext"].split(":", 2)
            assert version.startswith("v")
            return 200, {"data": {"plaintext": base64.b64decode(secret)[::-1].decode()}}
        if path == "/v1/transit/keys/errorgate/rotate":
            self.version += 1
            return 204, {}
        return 404, {"errors": [f"no handler for {path}"]}


@pytest.fixture
def vault() -> Iterator[tuple[str, _Transit]]:
    transit = _Transit(token="s.test-token")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            status, doc = transit.handle(
                self.path, self.headers.get("X-Vault-Token"), json.loads(raw or b"{}")
            )
            data = json.dumps(doc).encode() if status != 204 else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", transit
    server.shutdown()


def test_vault_transit_envelope_and_rewrap_after_rotation(
    tmp_path: Path,
    vault: tuple[str, _Transit],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, transit = vault
    monkeypatch.setenv("VAULT_TOKEN", transit.token)
    config = _config(tmp_path, {"provider": "vault", "url": url, "key_name": "errorgate"})
    assert main(["keys", "init", "--config", str(config)]) == 0, capsys.readouterr().err
    keys_dir = tmp_path / "data" / "keys"
    wrapped = json.loads((keys_dir / "keyring.json").read_text())["keys"][0]["wrapped"]
    assert base64.b64decode(wrapped).startswith(b"vault:v1:")
    kms = VaultTransitKms("errorgate", url=url, token=transit.token)
    token = Keyring.open(keys_dir, create=False, env_var=None, kms=kms).encrypt_field("v", **CTX)

    transit.handle("/v1/transit/keys/errorgate/rotate", transit.token, {})
    assert main(["keys", "rewrap", "--config", str(config)]) == 0
    wrapped = json.loads((keys_dir / "keyring.json").read_text())["keys"][0]["wrapped"]
    assert base64.b64decode(wrapped).startswith(b"vault:v2:")
    assert Keyring.open(keys_dir, create=False, env_var=None, kms=kms).decrypt_field(token, **CTX) == "v"
    paths = {p for p, _ in transit.requests}
    assert {"/v1/transit/encrypt/errorgate", "/v1/transit/decrypt/errorgate"} <= paths
    # A wrong token is refused by Vault and reported naming the key, never the token.
    monkeypatch.setenv("VAULT_TOKEN", "s.wrong")
    capsys.readouterr()
    assert main(["keys", "list", "--config", str(config)]) != 0
    err = capsys.readouterr().err
    assert (
        "vault transit key transit/errorgate" in err
        and "s.wrong" not in err
        and os.linesep not in err.strip()
    )
