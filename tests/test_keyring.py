"""Keyring: rotation, crypto-shredding, key-file permissions, master key sources, at-rest codec."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from errorgate.governance.crypto import AeadCodec, DecryptError
from errorgate.governance.keyring import Keyring, KeyringError
from errorgate.governance.kms import LocalKms, encode_master_key

CTX = {"key": "user.email", "signal": "traces", "tenant": "acme", "service": "checkout"}


@pytest.fixture(autouse=True)
def _no_master_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRORGATE_KEYRING", raising=False)


def open_ring(path: Path, **kwargs: object) -> Keyring:
    return Keyring.open(path, **kwargs)  # type: ignore[arg-type]


def test_created_with_owner_only_permissions_and_reopened(tmp_path: Path) -> None:
    ring = open_ring(tmp_path / "keys")
    assert (tmp_path / "keys" / "keyring.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "master.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    token = ring.encrypt_field("alice@example.com", **CTX)
    again = open_ring(tmp_path / "keys", create=False)
    assert again.active_key_id() == ring.active_key_id()
    assert again.decrypt_field(token, **CTX) == "alice@example.com"


def test_missing_keyring_without_create_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match=str(tmp_path / "nothing" / "keyring.json")):
        open_ring(tmp_path / "nothing", create=False)


def test_token_format_and_no_plaintext(tmp_path: Path) -> None:
    ring = open_ring(tmp_path / "keys")
    token = ring.encrypt_field("4111111111111111", **CTX)
    prefix, version, key_id, data = token.split(":")
    assert (prefix, version, key_id) == ("enc", "v2", ring.active_key_id())
    assert "4111" not in token and "=" not in data
    # Fresh nonce every time: equal plaintexts do not produce equal ciphertexts.
    assert ring.encrypt_field("4111111111111111", **CTX) != token


def test_rotation_keeps_old_ciphertexts_and_uses_new_key(tmp_path: Path) -> None:
    ring = open_ring(tmp_path / "keys")
    old_id = ring.active_key_id()
    old_token = ring.encrypt_field("old secret", **CTX)
    new_id = ring.rotate()
    assert new_id != old_id and ring.active_key_id() == new_id
    new_token = ring.encrypt_field("new secret", **CTX)
    assert new_token.startswith(f"enc:v2:{new_id}:")
    assert ring.decrypt_field(old_token, **CTX) == "old secret"
    assert ring.decrypt_field(new_token, **CTX) == "new secret"
    assert {k.id: k.status for k in ring.list()} == {old_id: "retired", new_id: "active"}


def test_rotation_by_another_process_is_picked_up(tmp_path: Path) -> None:
    gateway_view = open_ring(tmp_path / "keys")
    cli_view = open_ring(tmp_path / "keys", create=False)
    new_id = cli_view.rotate()
    token = cli_view.encrypt_field("written after rotation", **CTX)
    assert gateway_view.decrypt_field(token, **CTX) == "written after rotation"
    assert gateway_view.active_key_id() == new_id


@pytest.mark.parametrize(
    "change",
    [
        {"key": "user.name"},  # moved to another attribute
        {"tenant": "globex"},  # moved to another tenant
        {"signal": "logs"},  # moved to another signal
        {"service": "patient-records"},  # another service claimed (enc:v2 binds it)
    ],
)
def test_wrong_associated_data_is_rejected(tmp_path: Path, change: dict[str, str]) -> None:
    ring = open_ring(tmp_path / "keys")
    token = ring.encrypt_field("alice@example.com", **CTX)
    with pytest.raises(DecryptError, match="authentication failed") as info:
        ring.decrypt_field(token, **{**CTX, **change})
    assert "alice" not in str(info.value)


def test_altered_ciphertext_and_key_id_are_rejected(tmp_path: Path) -> None:
    ring = open_ring(tmp_path / "keys")
    first = ring.active_key_id()
    token = ring.encrypt_field("alice@example.com", **CTX)
    prefix, data = token.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    raw[-1] ^= 1
    flipped = prefix + ":" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(DecryptError, match="authentication failed"):
        ring.decrypt_field(flipped, **CTX)
    second = ring.rotate()
    with pytest.raises(DecryptError, match="authentication failed"):
        ring.decrypt_field(token.replace(first, second), **CTX)
    with pytest.raises(DecryptError, match="unknown key id"):
        ring.decrypt_field(token.replace(first, "k99-0000"), **CTX)
    with pytest.raises(DecryptError, match="not an errorgate ciphertext"):
        ring.decrypt_field("alice@example.com", **CTX)


def test_disable_is_crypto_shredding(tmp_path: Path) -> None:
    ring = open_ring(tmp_path / "keys")
    old_id = ring.active_key_id()
    token = ring.encrypt_field("to be forgotten", **CTX)
    with pytest.raises(KeyringError, match="rotate first"):
        ring.disable(old_id)
    ring.rotate()
    ring.disable(old_id)
    with pytest.raises(DecryptError, match=f"key {old_id} is disabled"):
        ring.decrypt_field(token, **CTX)
    # The material is gone from disk, not just flagged: a fresh process cannot decrypt either.
    entry = next(
        e for e in json.loads((tmp_path / "keys" / "keyring.json").read_text())["keys"] if e["id"] == old_id
    )
    assert "wrapped" not in entry and entry["status"] == "disabled"
    reopened = open_ring(tmp_path / "keys", create=False)
    with pytest.raises(DecryptError, match="disabled"):
        reopened.decrypt_field(token, **CTX)
    # The audit log's HMAC key survives, so old audit entries stay verifiable.
    assert reopened.hmac_key_for(old_id, "audit-log") == ring.hmac_key_for(old_id, "audit-log")
    with pytest.raises(KeyringError):
        reopened.hmac_key_for(old_id, "tokens")


@pytest.mark.parametrize("name", ["keyring.json", "master.key"])
@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_group_or_world_readable_key_file_is_refused(tmp_path: Path, name: str, mode: int) -> None:
    open_ring(tmp_path / "keys")
    path = tmp_path / "keys" / name
    os.chmod(path, mode)
    with pytest.raises(KeyringError) as info:
        open_ring(tmp_path / "keys", create=False)
    assert str(path) in str(info.value) and "chmod 600" in str(info.value)


def test_master_key_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    master = os.urandom(32)
    monkeypatch.setenv("ERRORGATE_KEYRING", encode_master_key(master))
    ring = open_ring(tmp_path / "keys")
    assert not (tmp_path / "keys" / "master.key").exists()
    token = ring.encrypt_field("v", **CTX)
    # Same keyring file, same master key given explicitly: decrypts.
    same = open_ring(tmp_path / "keys", create=False, env_var=None, kms=LocalKms(master))
    assert same.decrypt_field(token, **CTX) == "v"
    # Another master key cannot unwrap the data keys; the error names the source, not the key.
    monkeypatch.setenv("ERRORGATE_KEYRING", encode_master_key(os.urandom(32)))
    with pytest.raises(KeyringError, match=r"\$ERRORGATE_KEYRING"):
        open_ring(tmp_path / "keys", create=False)
    monkeypatch.setenv("ERRORGATE_KEYRING", "not base64!")
    with pytest.raises(KeyringError, match="environment variable ERRORGATE_KEYRING"):
        open_ring(tmp_path / "keys", create=False)


def test_pluggable_kms_envelope(tmp_path: Path) -> None:
    class RecordingKms:
        """Stands in for a cloud KMS: the wrapped blobs it hands out are all the keyring stores."""

        name = "recording"

        def __init__(self) -> None:
            self.inner = LocalKms.generate()
            self.calls: list[str] = []

        def wrap(self, key: bytes) -> bytes:
            self.calls.append("wrap")
            return self.inner.wrap(key)

        def unwrap(self, blob: bytes) -> bytes:
            self.calls.append("unwrap")
            return self.inner.unwrap(blob)

    kms = RecordingKms()
    ring = open_ring(tmp_path / "keys", kms=kms)
    assert not (tmp_path / "keys" / "master.key").exists()
    token = ring.encrypt_field("v", **CTX)
    assert open_ring(tmp_path / "keys", create=False, kms=kms).decrypt_field(token, **CTX) == "v"
    assert kms.calls.count("wrap") == 1 and "unwrap" in kms.calls
    assert json.loads((tmp_path / "keys" / "keyring.json").read_text())["kms"] == "recording"


def test_keys_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("test.keyring")
    ring = open_ring(tmp_path / "keys", logger=logger)
    ring.rotate()
    first = ring.list()[0].id
    ring.disable(first)
    assert str(tmp_path / "keys") in caplog.text  # says where
    master = (tmp_path / "keys" / "master.key").read_text().strip()
    secrets = [master, base64.b64encode(base64.urlsafe_b64decode(master + "=")).decode()]
    for entry in json.loads((tmp_path / "keys" / "keyring.json").read_text())["keys"]:
        secrets += [entry.get("wrapped", ""), *entry.get("retained", {}).values()]
    _, hmac_key = ring.hmac_key("audit-log")
    secrets += [hmac_key.hex(), base64.b64encode(hmac_key).decode()]
    for secret in filter(None, secrets):
        assert secret not in caplog.text


def test_hmac_keys_are_per_purpose_and_per_key(tmp_path: Path) -> None:
    ring = open_ring(tmp_path / "keys")
    kid, tokens = ring.hmac_key("tokens")
    assert kid == ring.active_key_id() and len(tokens) == 32
    assert ring.hmac_key("audit-log")[1] != tokens
    assert ring.hmac_key("tokens")[1] == tokens  # stable: equal inputs keep joining
    ring.rotate()
    assert ring.hmac_key("tokens")[1] != tokens
    assert ring.hmac_key_for(kid, "tokens") == tokens


# ---------------------------------------------------------------- at-rest codec


def test_codec_round_trip_across_rotation(tmp_path: Path) -> None:
    ring = open_ring(tmp_path / "keys")
    codec = AeadCodec(ring, "queue")
    before = codec.encode(b"record one")
    ring.rotate()
    after = codec.encode(b"record two")
    assert b"record" not in before + after
    assert codec.decode(before) == b"record one"
    assert codec.decode(after) == b"record two"


def test_codec_detects_tampering_and_missing_keys(tmp_path: Path) -> None:
    ring = open_ring(tmp_path / "keys")
    codec = AeadCodec(ring, "queue")
    frame = bytearray(codec.encode(b"payload"))
    frame[-3] ^= 0x40
    with pytest.raises(ValueError, match="tampered"):
        codec.decode(bytes(frame))
    with pytest.raises(ValueError, match="tampered"):
        codec.decode(codec.encode(b"payload")[:-1])
    with pytest.raises(ValueError, match="not an errorgate encrypted frame"):
        codec.decode(b"plain bytes written without a codec")
    # Records cannot be moved between stores: the purpose is bound.
    with pytest.raises(ValueError):
        AeadCodec(ring, "dlq").decode(codec.encode(b"payload"))
    # Another keyring (key lost) cannot read them.
    other = AeadCodec(open_ring(tmp_path / "other"), "queue")
    with pytest.raises(ValueError):
        other.decode(codec.encode(b"payload"))
    # Crypto-shredding reaches data at rest too.
    old = ring.active_key_id()
    record = codec.encode(b"payload")
    ring.rotate()
    ring.disable(old)
    with pytest.raises(ValueError, match="disabled"):
        codec.decode(record)


def test_persistent_queue_files_unreadable_without_the_key(tmp_path: Path) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

    from errorgate.delivery.diskqueue import PersistentQueue
    from errorgate.signals import Signal

    planted = "planted-secret-4111111111111111@example.com"
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans()])
    span = request.resource_spans[0].scope_spans.add().spans.add()
    span.name = planted
    span.trace_id = os.urandom(16)
    span.span_id = os.urandom(8)

    ring = open_ring(tmp_path / "keys")
    queue = PersistentQueue(tmp_path / "queue", 1 << 20, AeadCodec(ring, "at-rest"))
    queue.put(Signal.TRACES, request, 1)
    queue.close()
    files = [p for p in (tmp_path / "queue").rglob("*") if p.is_file()]
    assert files and all(planted.encode() not in p.read_bytes() for p in files)
    assert all(b"4111111111111111" not in p.read_bytes() for p in files)

    # With the key: the record comes back intact after a restart.
    reopened = PersistentQueue(
        tmp_path / "queue", 1 << 20, AeadCodec(open_ring(tmp_path / "keys"), "at-rest")
    )
    record = reopened.get(timeout=1)
    assert record is not None and not record.corrupt
    assert record.to_request().resource_spans[0].scope_spans[0].spans[0].name == planted
    reopened.close()

    # Without it (another keyring): the queue reports the record as corrupt, never as data.
    stranger = PersistentQueue(
        tmp_path / "queue", 1 << 20, AeadCodec(open_ring(tmp_path / "other"), "at-rest")
    )
    record = stranger.get(timeout=1)
    assert record is not None and record.corrupt and record.data is None
    stranger.close()


def test_legacy_v1_values_still_decrypt_but_do_not_bind_the_service(tmp_path: Path) -> None:
    from errorgate.governance.crypto import field_ad, field_version, seal

    ring = open_ring(tmp_path / "keys")
    kid, aead = ring.aead_for("field")
    ad = field_ad(kid, tenant="acme", signal="traces", key="user.email")
    blob = seal(aead, b"written before v2", ad)
    token = "enc:v1:" + kid + ":" + base64.urlsafe_b64encode(blob).decode().rstrip("=")
    assert field_version(token) == "v1"
    assert ring.decrypt_field(token, **CTX) == "written before v2"
    # v1 never bound the service: that is why such values are reported for re-encryption.
    assert ring.decrypt_field(token, **{**CTX, "service": "anything"}) == "written before v2"
    with pytest.raises(DecryptError, match="authentication failed"):
        ring.decrypt_field(token, **{**CTX, "tenant": "globex"})
