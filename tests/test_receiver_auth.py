"""Bearer-token loading and checking (file and env), without logging tokens."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from errorgate.config import AuthConfig, ConfigError
from errorgate.receiver import auth as auth_module
from errorgate.receiver.auth import BearerAuth

LOG = logging.getLogger("test.receiver.auth")


def _tokens_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_file_tokens_comments_and_schemes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _tokens_file(tmp_path, "# team A\n  tok-a  \n\n# team B\ntok-b\n")
    with caplog.at_level(logging.DEBUG):
        auth = BearerAuth(AuthConfig(bearer_tokens_file=str(path)), LOG)
    assert caplog.records == []  # owner-only file: nothing to warn about
    assert auth.check("Bearer tok-a")
    assert auth.check("bearer tok-b")
    assert auth.check("Bearer  tok-b ")
    for header in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "tok-a",
        "Basic tok-a",
        "Bearer tok",
        "Bearer tok-a2",
        "Bearer # team A",
    ):
        assert not auth.check(header), header


def test_readable_by_others_warns_with_path_not_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _tokens_file(tmp_path, "very-secret-token\n", mode=0o644)
    with caplog.at_level(logging.WARNING):
        auth = BearerAuth(AuthConfig(bearer_tokens_file=str(path)), LOG)
    assert auth.check("Bearer very-secret-token")
    assert len(caplog.records) == 1
    assert str(path) in caplog.text and "readable by group or others" in caplog.text
    assert "very-secret-token" not in caplog.text


def test_env_and_file_tokens_combine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EG_TOKEN", "from-env")
    path = _tokens_file(tmp_path, "from-file\n")
    auth = BearerAuth(AuthConfig(bearer_tokens_file=str(path), bearer_token_env="EG_TOKEN"), LOG)
    assert auth.check("Bearer from-env") and auth.check("Bearer from-file")
    assert not auth.check("Bearer from-other")


def test_missing_tokens_are_config_errors_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EG_UNSET", raising=False)
    with pytest.raises(ConfigError) as exc:
        BearerAuth(AuthConfig(bearer_token_env="EG_UNSET"), LOG, "receivers.otlp/edge.auth")
    assert str(exc.value).startswith("receivers.otlp/edge.auth: auth is configured but no bearer tokens")
    assert "EG_UNSET is empty or unset" in str(exc.value)

    with pytest.raises(
        ConfigError, match=r"receivers\.otlp\.auth: .*set bearer_tokens_file or bearer_token_env"
    ):
        BearerAuth(AuthConfig(), LOG)

    only_comments = _tokens_file(tmp_path, "# nothing yet\n\n")
    with pytest.raises(ConfigError, match="has no tokens"):
        BearerAuth(AuthConfig(bearer_tokens_file=str(only_comments)), LOG)

    with pytest.raises(ConfigError, match=r"receivers\.otlp\.auth\.bearer_tokens_file: cannot read"):
        BearerAuth(AuthConfig(bearer_tokens_file=str(tmp_path / "absent")), LOG)


def test_tokens_file_is_reloaded_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(auth_module, "_RELOAD_CHECK_INTERVAL", 0.0)
    path = _tokens_file(tmp_path, "old-token\n")
    auth = BearerAuth(AuthConfig(bearer_tokens_file=str(path)), LOG)
    assert auth.check("Bearer old-token")

    path.write_text("new-token\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with caplog.at_level(logging.INFO):
        assert auth.check("Bearer new-token")
    assert not auth.check("Bearer old-token")
    assert "new-token" not in caplog.text

    # an emptied file keeps the previous tokens instead of locking everyone out
    path.write_text("")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    assert auth.check("Bearer new-token")
    # a file removed during rotation keeps the last good tokens too
    path.unlink()
    assert auth.check("Bearer new-token")
