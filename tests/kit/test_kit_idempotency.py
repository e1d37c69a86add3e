"""idempotency: the IETF Idempotency-Key behaviour through ASGI and WSGI, on SQLite, Redis and PostgreSQL —
replays create no duplicate order, 409 while in flight, 422 on reuse with another body, clear
400/413 errors that store nothing, and a 5xx frees the key for the retry."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import pytest
from errorgate_kit.idempotency import IdempotencyMiddleware, WSGIIdempotencyMiddleware, parse_key
from errorgate_kit.idempotency_store import store_from_url


class Shop:
    """An order endpoint that counts the orders it created (the side effect a replay must not repeat)."""

    def __init__(self) -> None:
        self.orders: list[bytes] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = False

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            status, out = 503, b'{"error": "db down"}'
        else:
            self.orders.append(body)
            status, out = 201, json.dumps({"order": len(self.orders)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": out})

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.orders.append(body)
        start_response("201 Created", [("content-type", "application/json")])
        return [json.dumps({"order": len(self.orders)}).encode()]


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'idem.db'}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        store_from_url(url)._pool.execute("TRUNCATE idempotency")  # type: ignore[attr-defined]
        return url
    url = request.getfixturevalue("redis_url")
    store_from_url(url)._redis.flushdb()  # type: ignore[attr-defined]
    return url


def test_asgi_replay_conflict_and_mismatch(spans, store_url: str) -> None:
    shop = Shop()
    app = IdempotencyMiddleware(shop.asgi, store_url=store_url)

    async def scenario() -> None:
        async with asgi_client(app) as c:
            key = {"Idempotency-Key": '"order-8e03978e"'}
            first = await c.post("/orders", content=b'{"sku": "A1"}', headers=key)
            again = await c.post("/orders", content=b'{"sku": "A1"}', headers=key)
            assert first.status_code == again.status_code == 201
            assert again.json() == first.json() == {"order": 1}
            assert again.headers["idempotent-replayed"] == "true"
            other = await c.post("/orders", content=b'{"sku": "B2"}', headers=key)
            assert other.status_code == 422 and other.headers["content-type"] == "application/problem+json"
            shop.gate = asyncio.Event()
            slow = asyncio.create_task(c.post("/orders", content=b"{}", headers={"Idempotency-Key": "k2"}))
            await asyncio.sleep(0.05)
            busy = await c.post("/orders", content=b"{}", headers={"Idempotency-Key": "k2"})
            assert busy.status_code == 409 and "still being processed" in busy.json()["detail"]
            shop.gate.set()
            assert (await slow).status_code == 201

    asyncio.run(scenario())
    assert len(shop.orders) == 2  # one per key: no duplicate order


def test_asgi_5xx_frees_the_key_for_the_retry(spans) -> None:
    shop = Shop()
    shop.fail_next = True
    app = IdempotencyMiddleware(shop.asgi, store_url="sqlite:///:memory:")

    async def scenario() -> tuple[int, int]:
        async with asgi_client(app) as c:
            h = {"Idempotency-Key": "retry-me"}
            a = await c.post("/orders", content=b"{}", headers=h)
            b = await c.post("/orders", content=b"{}", headers=h)
            return a.status_code, b.status_code

    assert asyncio.run(scenario()) == (503, 201)
    assert len(shop.orders) == 1


@pytest.mark.parametrize(
    ("headers", "body", "status", "detail"),
    [
        ({"Idempotency-Key": '"unterminated'}, b"{}", 400, "quoted string"),
        ({"Idempotency-Key": "has space"}, b"{}", 400, "quoted string"),
        ({"Idempotency-Key": "x" * 300}, b"{}", 400, "1-255"),
        ({}, b"{}", 400, "requires Idempotency-Key"),
        ({"Idempotency-Key": "big"}, b"x" * 2000, 413, "exceeds 1000 bytes"),
    ],
)
def test_bad_requests_get_clear_errors_and_nothing_is_stored(spans, headers, body, status, detail) -> None:
    shop = Shop()
    app = IdempotencyMiddleware(shop.asgi, required=True, max_body_bytes=1000)

    async def send() -> httpx.Response:
        async with asgi_client(app) as c:
            return await c.post("/orders", content=body, headers=headers)

    response = asyncio.run(send())
    assert response.status_code == status and detail in response.json()["detail"]
    assert shop.orders == []
    if "Idempotency-Key" in headers and status == 413:  # nothing half-applied: the key is still free
        app.policy.max_body_bytes = 10_000
        assert asyncio.run(send()).status_code == 201


def test_get_requests_pass_through(spans) -> None:
    shop = Shop()
    app = IdempotencyMiddleware(shop.asgi)

    async def send() -> int:
        async with asgi_client(app) as c:
            return (await c.get("/orders", headers={"Idempotency-Key": "not checked"})).status_code

    assert asyncio.run(send()) == 201


def wsgi_call(app: Any, body: bytes, key: str | None) -> tuple[str, dict[str, str], bytes]:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/orders", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}  # fmt: skip
    if key is not None:
        environ["HTTP_IDEMPOTENCY_KEY"] = key
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        got["status"], got["headers"] = status, dict(headers)

    out = b"".join(app(environ, start_response))
    return got["status"], got["headers"], out


def test_wsgi_twin(spans, store_url: str) -> None:
    shop = Shop()
    app = WSGIIdempotencyMiddleware(shop.wsgi, store_url=store_url, max_body_bytes=100)
    s1, _, b1 = wsgi_call(app, b'{"sku": "A1"}', '"w-1"')
    s2, h2, b2 = wsgi_call(app, b'{"sku": "A1"}', '"w-1"')
    assert s1.startswith("201") and s2.startswith("201") and b1 == b2 and h2["idempotent-replayed"] == "true"
    assert wsgi_call(app, b'{"sku": "B2"}', '"w-1"')[0].startswith("422")
    assert wsgi_call(app, b"x" * 200, "w-2")[0].startswith("413")
    assert wsgi_call(app, b"{}", "bad key!")[0].startswith("400")
    assert len(shop.orders) == 1


def test_key_parsing_and_store_urls() -> None:
    assert parse_key('"a\\"b"') == 'a"b' and parse_key("abc-123") == "abc-123"
    with pytest.raises(ValueError, match="unsupported idempotency store URL"):
        store_from_url("mysql://x")
