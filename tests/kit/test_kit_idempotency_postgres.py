"""idempotency on a real PostgreSQL shared by several replicas: of concurrent requests with one key
exactly one runs (the others get 409, whichever replica they reach), a different body gets 422,
stored responses and leases expire on the database's clock, and a worker that dies mid-request
frees its key once its lease ends."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import httpx
import pytest
from errorgate_kit.idempotency import IdempotencyMiddleware, WSGIIdempotencyMiddleware
from errorgate_kit.idempotency_store import PostgresStore, store_from_url


@pytest.fixture
def pg(postgres_url: str) -> str:
    PostgresStore(postgres_url)._pool.execute("TRUNCATE idempotency")
    return postgres_url


class Orders:
    """An ASGI order endpoint that can be held mid-request; counts the orders it created."""

    def __init__(self) -> None:
        self.created: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        await self.gate.wait()
        self.created.append(body)
        out = json.dumps({"order": len(self.created)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": out})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")


def test_claims_race_on_separate_connections_one_winner(pg: str) -> None:
    """16 workers, each with its own store (its own connection, as separate processes would have),
    claim one key at the same instant: the database lets exactly one through."""
    stores = [PostgresStore(pg) for _ in range(16)]
    barrier = threading.Barrier(len(stores))
    results: list[Any] = [None] * len(stores)

    def claim(i: int) -> None:
        barrier.wait()
        results[i] = stores[i].begin("race-1", "fp", lease=30)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r is None for r in results) == 1
    assert all(r.status is None and r.fingerprint == "fp" for r in results if r is not None)
    for s in stores:
        s.close()


def test_two_replicas_concurrent_requests_one_order_then_replay_and_422(spans, pg: str) -> None:
    orders = Orders()
    replicas = [IdempotencyMiddleware(orders, store_url=pg), IdempotencyMiddleware(orders, store_url=pg)]

    async def scenario() -> None:
        async with client(replicas[0]) as a, client(replicas[1]) as b:
            orders.gate.clear()  # the first request to get in stays in flight
            key = {"Idempotency-Key": '"order-5f1c"'}
            sends = [(a, b)[i % 2].post("/orders", content=b'{"sku": "A1"}', headers=key) for i in range(8)]
            tasks = [asyncio.create_task(s) for s in sends]
            await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.3)  # let every loser's answer arrive while the winner is held
            early = [t.result().status_code for t in tasks if t.done()]
            assert sorted(early) == [409] * 7, early
            orders.gate.set()
            statuses = [(await t).status_code for t in tasks]
            assert sorted(statuses) == [201] + [409] * 7
            replay = await b.post("/orders", content=b'{"sku": "A1"}', headers=key)
            assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
            assert replay.json() == {"order": 1}
            other = await a.post("/orders", content=b'{"sku": "B2"}', headers=key)
            assert other.status_code == 422 and other.headers["content-type"] == "application/problem+json"

    asyncio.run(scenario())
    assert orders.created == [b'{"sku": "A1"}']  # one order, whatever replica each request reached


def test_stored_response_expires_after_its_ttl(spans, pg: str) -> None:
    orders = Orders()
    app = IdempotencyMiddleware(orders, store_url=pg, ttl=1.0)

    async def post() -> httpx.Response:
        async with client(app) as c:
            return await c.post("/orders", content=b"{}", headers={"Idempotency-Key": "ttl-1"})

    assert asyncio.run(post()).json() == {"order": 1}
    assert asyncio.run(post()).headers.get("idempotent-replayed") == "true"
    time.sleep(1.2)
    fresh = asyncio.run(post())
    assert fresh.json() == {"order": 2} and "idempotent-replayed" not in fresh.headers


CRASHING_WORKER = textwrap.dedent(
    """
    import io, os, sys
    from errorgate_kit.idempotency import WSGIIdempotencyMiddleware
    def app(environ, start_response):
        os._exit(9)  # the worker dies mid-request: no handler runs, nothing releases the key
    mw = WSGIIdempotencyMiddleware(app, store_url=sys.argv[1], lease=float(sys.argv[2]))
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/orders", "CONTENT_LENGTH": "2",
               "wsgi.input": io.BytesIO(b"{}"), "HTTP_IDEMPOTENCY_KEY": "crash-1"}
    mw(environ, lambda *a: None)
    """
)


def wsgi_post(app: Any, key: str) -> str:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/orders", "CONTENT_LENGTH": "2",
               "wsgi.input": io.BytesIO(b"{}"), "HTTP_IDEMPOTENCY_KEY": key}  # fmt: skip
    got: list[str] = []
    b"".join(app(environ, lambda status, headers, exc_info=None: got.append(status)))
    return got[0]


def test_a_worker_that_dies_mid_request_frees_its_key_when_the_lease_ends(spans, pg: str) -> None:
    lease = 2.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run([sys.executable, "-c", CRASHING_WORKER, pg, str(lease)], env=env, timeout=60)
    died = time.monotonic()  # the lease began before this: the key must be free within ``lease``
    assert child.returncode == 9
    created: list[int] = []

    def handler(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        created.append(1)
        start_response("201 Created", [("content-type", "application/json")])
        return [b'{"order": 1}']

    app = WSGIIdempotencyMiddleware(handler, store_url=pg)
    assert wsgi_post(app, "crash-1").startswith("409")  # the dead worker's lease still holds it
    while (status := wsgi_post(app, "crash-1")).startswith("409") and time.monotonic() - died < lease + 2:
        time.sleep(0.1)
    assert status.startswith("201") and time.monotonic() - died <= lease + 0.5  # the retry runs
    assert created == [1]


def test_postgres_urls_and_bad_settings_name_the_problem(pg: str) -> None:
    assert isinstance(store_from_url(pg.replace("postgresql+psycopg://", "postgresql://")), PostgresStore)
    with pytest.raises(ValueError, match="table name"):
        PostgresStore(pg, table="idempotency; DROP TABLE x")
    with pytest.raises(ValueError, match="scheme 'mysql'") as e:
        store_from_url("mysql://app:s3cret@db/x")
    assert "s3cret" not in str(e.value)
