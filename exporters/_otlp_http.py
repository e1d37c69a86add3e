"""OTLP/HTTP protobuf sender (stdlib ``http.client``, one keep-alive connection per consumer thread)."""

from __future__ import annotations

import gzip
import http.client
import ssl
import threading
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from errorgate.component import ExportResult
from errorgate.exporters._otlp_common import HTTP_PATHS, RESPONSE_TYPES, serialized, success_from_response
from errorgate.signals import Batch

if TYPE_CHECKING:
    from errorgate.exporters.otlp import OtlpExporterConfig

RETRYABLE = frozenset({429, 502, 503, 504})


class HttpSender:
    def __init__(self, config: OtlpExporterConfig) -> None:
        endpoint = config.endpoint
        if "://" not in endpoint:
            endpoint = ("http://" if config.tls.insecure else "https://") + endpoint
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"endpoint: expected a base URL like http://host:4318, got {config.endpoint!r}")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        base = url.path.rstrip("/")
        self._paths = {s: base + p for s, p in HTTP_PATHS.items()}
        self._ssl: ssl.SSLContext | None = None
        if self._https:
            self._ssl = ssl.create_default_context(cafile=config.tls.ca_file)
            if config.tls.cert_file:
                self._ssl.load_cert_chain(config.tls.cert_file, config.tls.key_file)
        self._gzip = config.compression == "gzip"
        self._headers = {"Content-Type": "application/x-protobuf", **config.headers}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._local = threading.local()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def send(self, batch: Batch, timeout: float) -> ExportResult:
        body = serialized(batch)
        if self._gzip:
            body = gzip.compress(body, compresslevel=5)
        try:
            conn = self._connection(timeout)
            conn.request("POST", self._paths[batch.signal], body=body, headers=self._headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            self._drop_connection()
            return ExportResult.retry(f"connection error: {type(e).__name__}")
        status = response.status
        if 200 <= status < 300:
            parsed = None
            if data and "protobuf" in (response.getheader("Content-Type") or ""):
                try:
                    parsed = RESPONSE_TYPES[batch.signal].FromString(data)
                except Exception:
                    parsed = None
            return success_from_response(batch.signal, parsed)
        if response.getheader("Connection", "").lower() == "close":
            self._drop_connection()
        if status in RETRYABLE:
            return ExportResult.retry(f"HTTP {status}", parse_retry_after(response.getheader("Retry-After")))
        return ExportResult.permanent(f"HTTP {status}")

    def close(self) -> None:
        self._drop_connection()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return seconds if seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))
