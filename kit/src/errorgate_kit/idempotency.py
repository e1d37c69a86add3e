"""Idempotency-Key middleware for ASGI and WSGI, after the IETF httpapi draft
(draft-ietf-httpapi-idempotency-key-header).

For POST and PATCH (configurable) carrying ``Idempotency-Key``:
- first request: runs, and its response is stored (2xx–4xx; a 5xx or an exception frees the
  key so the client's retry runs again);
- the same key and the same request (method, path, body) again: the stored response is
  replayed with ``Idempotent-Replayed: true`` — the handler does not run twice;
- the same key while the first is still running: ``409``; the same key with another request: ``422``;
- a malformed key (not an sf-string or token of 1–255 printable characters): ``400``; a
  missing key when ``required=True``: ``400``; a body over ``max_body_bytes``: ``413``.
Errors are ``application/problem+json`` (RFC 9457) and nothing is stored for them::

    app = IdempotencyMiddleware(app, store_url="sqlite:///:memory:")        # ASGI
    wsgi_app = WSGIIdempotencyMiddleware(wsgi_app, store_url="redis://127.0.0.1:6379/0")
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from errorgate_kit.idempotency_store import Record, Store, store_from_url

HEADER = "idempotency-key"
REPLAYED = ("idempotent-replayed", "true")
_SF_STRING = re.compile(r'^"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]){1,255})"$')
_TOKEN = re.compile(r"^[A-Za-z0-9._:~+/=-]{1,255}$")
Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Problem:
    status: int
    title: str
    detail: str

    def response(self) -> tuple[int, Headers, bytes]:
        body = {"type": "about:blank", "title": self.title, "status": self.status, "detail": self.detail}
        return self.status, [("content-type", "application/problem+json")], json.dumps(body).encode()


def parse_key(value: str) -> str:
    """The key in an ``Idempotency-Key`` value; ``Problem`` (400) when it is neither an sf-string
    nor a bare token."""
    value = value.strip()
    match = _SF_STRING.match(value)
    if match:
        return re.sub(r"\\(.)", r"\1", match.group(1))
    if _TOKEN.match(value):
        return value
    raise KeyFormatError(
        Problem(
            400,
            "Malformed Idempotency-Key",
            'Idempotency-Key must be a quoted string ("...") or a token of 1-255 printable ASCII characters',
        )
    )


class KeyFormatError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


class _Policy:
    """What both middlewares decide, independent of ASGI/WSGI plumbing."""

    def __init__(
        self,
        store_url: str,
        store: Store | None,
        methods: Iterable[str],
        required: bool,
        max_body_bytes: int,
        ttl: float,
        lease: float,
    ) -> None:
        self.store = store if store is not None else store_from_url(store_url)
        self.methods = frozenset(m.upper() for m in methods)
        self.required, self.max_body_bytes, self.ttl, self.lease = required, max_body_bytes, ttl, lease

    def key_of(self, method: str, header: str | None) -> str | None:
        """The key to enforce, None to pass the request through; raises KeyFormatError."""
        if method.upper() not in self.methods:
            return None
        if header is None:
            if self.required:
                raise KeyFormatError(
                    Problem(400, "Missing Idempotency-Key", "this endpoint requires Idempotency-Key")
                )
            return None
        return parse_key(header)

    def release_quietly(self, key: str) -> None:
        try:
            self.store.release(key)
        except Exception:  # the handler's own error is the one to report
            pass

    def too_large(self, size: int) -> Problem:
        return Problem(413, "Payload Too Large", f"request body exceeds {self.max_body_bytes} bytes")

    @staticmethod
    def fingerprint(method: str, path: str, body: bytes) -> str:
        return hashlib.sha256(b"\0".join([method.upper().encode(), path.encode(), body])).hexdigest()

    def begin(self, key: str, fingerprint: str) -> Record | Problem | None:
        """None: run the request; a Record: replay it; a Problem: answer with it."""
        held = self.store.begin(key, fingerprint, self.lease)
        if held is None:
            return None
        if held.fingerprint != fingerprint:
            return Problem(422, "Idempotency-Key reused", "this key was already used for a different request")
        if held.status is None:
            return Problem(
                409, "Request in progress", "a request with this Idempotency-Key is still being processed"
            )
        trace.get_current_span().add_event("idempotency.replay", {"http.response.status_code": held.status})
        return held

    def finish(self, key: str, fingerprint: str, status: int | None, headers: Headers, body: bytes) -> None:
        if status is None or status >= 500:
            self.store.release(key)  # the client's retry must run the request again
        else:
            self.store.complete(key, Record(fingerprint, status, headers, body), self.ttl)


class _Middleware:
    """What the ASGI and WSGI middleware share: the wrapped app and the policy (same arguments)."""

    def __init__(
        self,
        app: Callable[..., Any],
        store_url: str = "sqlite:///:memory:",
        *,
        store: Store | None = None,
        methods: Iterable[str] = ("POST", "PATCH"),
        required: bool = False,
        max_body_bytes: int = 1024 * 1024,
        ttl: float = 24 * 3600.0,
        lease: float = 60.0,
    ) -> None:
        self.app = app
        self.policy = _Policy(store_url, store, methods, required, max_body_bytes, ttl, lease)


class IdempotencyMiddleware(_Middleware):
    """ASGI middleware (see the module docstring)."""

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        raw = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"idempotency-key"),
            None,
        )
        try:
            key = self.policy.key_of(method, raw)
        except KeyFormatError as e:
            await _asgi_answer(send, *e.problem.response())
            return
        if key is None:
            await self.app(scope, receive, send)
            return
        body = await _asgi_body(receive, self.policy.max_body_bytes)
        if body is None:
            await _asgi_answer(send, *self.policy.too_large(0).response())
            return
        fingerprint = self.policy.fingerprint(method, scope.get("path", ""), body)
        decision = await asyncio.to_thread(self.policy.begin, key, fingerprint)
        if isinstance(decision, Problem):
            await _asgi_answer(send, *decision.response())
            return
        if decision is not None:
            assert decision.status is not None
            await _asgi_answer(send, decision.status, [*decision.headers, REPLAYED], decision.body)
            return
        await self._run(scope, body, send, key, fingerprint)

    async def _run(
        self, scope: dict[str, Any], body: bytes, send: Callable[..., Any], key: str, fingerprint: str
    ) -> None:
        sent = False

        async def replay_receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status: int | None = None
        headers: Headers = []
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await asyncio.to_thread(self.policy.release_quietly, key)
            raise
        await asyncio.to_thread(self.policy.finish, key, fingerprint, status, headers, b"".join(chunks))


async def _asgi_body(receive: Callable[..., Any], limit: int) -> bytes | None:
    """The whole request body, or None once it grows past ``limit`` (nothing is read beyond it)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _asgi_answer(send: Callable[..., Any], status: int, headers: Headers, body: bytes) -> None:
    encoded = [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers if k.lower() != "content-length"
    ]
    encoded.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    await send({"type": "http.response.body", "body": body})


_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Content",
}


class WSGIIdempotencyMiddleware(_Middleware):
    """The WSGI twin of ``IdempotencyMiddleware`` (same arguments, same answers)."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            key = self.policy.key_of(method, environ.get("HTTP_IDEMPOTENCY_KEY"))
        except KeyFormatError as e:
            return _wsgi_answer(start_response, *e.problem.response())
        if key is None:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _wsgi_answer(
                start_response, *Problem(400, "Bad Content-Length", "not an integer").response()
            )
        if length > self.policy.max_body_bytes:
            return _wsgi_answer(start_response, *self.policy.too_large(length).response())
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        fingerprint = self.policy.fingerprint(method, environ.get("PATH_INFO", ""), body)
        decision = self.policy.begin(key, fingerprint)
        if isinstance(decision, Problem):
            return _wsgi_answer(start_response, *decision.response())
        if decision is not None:
            assert decision.status is not None
            return _wsgi_answer(start_response, decision.status, [*decision.headers, REPLAYED], decision.body)
        return self._run(environ, start_response, key, fingerprint)

    def _run(
        self, environ: dict[str, Any], start_response: Callable[..., Any], key: str, fingerprint: str
    ) -> list[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: Headers, exc_info: Any = None) -> Callable[[bytes], Any]:
            captured["status"], captured["headers"] = int(status.split(" ", 1)[0]), list(headers)
            return start_response(status, headers, exc_info)  # type: ignore[no-any-return]

        try:
            result = self.app(environ, capture)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BaseException:
            self.policy.release_quietly(key)
            raise
        self.policy.finish(key, fingerprint, captured.get("status"), captured.get("headers", []), body)
        return [body]


def _wsgi_answer(
    start_response: Callable[..., Any], status: int, headers: Headers, body: bytes
) -> list[bytes]:
    headers = [h for h in headers if h[0].lower() != "content-length"] + [("content-length", str(len(body)))]
    start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
    return [body]
