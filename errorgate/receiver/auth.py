"""Bearer-token authentication shared by the gRPC and HTTP receivers.

Tokens come from ``bearer_tokens_file`` (one per line, ``#`` comments) and/or the
environment variable ``bearer_token_env``. The file is re-read when it changes, so
tokens can be rotated without a restart. Tokens are never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
import threading
import time
from pathlib import Path

from errorgate.config import AuthConfig, ConfigError

_RELOAD_CHECK_INTERVAL = 2.0  # seconds between mtime checks of the tokens file


def load_tokens_file(path: Path, logger: logging.Logger, key_path: str) -> list[bytes]:
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{key_path}.bearer_tokens_file: cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key_path}.bearer_tokens_file: {path} is not UTF-8 text") from None
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning(
            "bearer tokens file %s is readable by group or others; restrict it with chmod 600", path
        )
    tokens = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            tokens.append(line.encode("utf-8"))
    return tokens


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` values in constant time against every token."""

    def __init__(
        self, config: AuthConfig, logger: logging.Logger, key_path: str = "receivers.otlp.auth"
    ) -> None:
        self._config = config
        self._logger = logger
        self._key_path = key_path
        self._lock = threading.Lock()
        self._file = Path(config.bearer_tokens_file) if config.bearer_tokens_file else None
        self._file_mtime: float | None = None
        self._next_check = 0.0
        self._env_tokens: list[bytes] = []
        if config.bearer_token_env:
            value = os.environ.get(config.bearer_token_env, "").strip()
            if value:
                self._env_tokens.append(value.encode("utf-8"))
        self._file_tokens: list[bytes] = []
        if self._file is not None:
            self._file_mtime = self._file.stat().st_mtime if self._file.exists() else None
            self._file_tokens = load_tokens_file(self._file, logger, key_path)
        if not self._file_tokens and not self._env_tokens:
            sources = []
            if config.bearer_tokens_file:
                sources.append(f"bearer_tokens_file ({config.bearer_tokens_file}) has no tokens")
            if config.bearer_token_env:
                sources.append(f"environment variable {config.bearer_token_env} is empty or unset")
            detail = "; ".join(sources) or "set bearer_tokens_file or bearer_token_env"
            raise ConfigError(f"{key_path}: auth is configured but no bearer tokens were found: {detail}")

    def check(self, authorization: str | None) -> bool:
        """True when ``authorization`` is ``Bearer <token>`` with a known token."""
        if not authorization:
            return False
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        candidate = credential.strip().encode("utf-8")
        ok = False
        # Compare against every token, with no early exit, so timing reveals neither
        # which token matched nor how many there are before it.
        for token in self._tokens():
            ok |= hmac.compare_digest(token, candidate)
        return ok

    def _tokens(self) -> list[bytes]:
        if self._file is not None:
            self._maybe_reload()
        return self._file_tokens + self._env_tokens

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + _RELOAD_CHECK_INTERVAL
            assert self._file is not None
            try:
                mtime = self._file.stat().st_mtime
            except OSError:
                return  # keep the last good tokens while the file is being replaced
            if mtime == self._file_mtime:
                return
            try:
                tokens = load_tokens_file(self._file, self._logger, self._key_path)
            except ConfigError as e:
                self._logger.warning("keeping previous bearer tokens: %s", e)
                return
            self._file_mtime = mtime
            if tokens or self._env_tokens:
                self._file_tokens = tokens
                self._logger.info("reloaded bearer tokens from %s (%d tokens)", self._file, len(tokens))
            else:
                self._logger.warning(
                    "bearer tokens file %s is now empty; keeping previous tokens", self._file
                )
