"""The demo inventory honours its caller's deadline before it calls stock-db: a stock-db call may
take up to its socket timeout, so with less time left than that the caller gets 504
``DeadlineExceeded`` at once instead of an answer up to 0.5 s past its deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import redis

from tests.kit.conftest import start_redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "kit" / "demo"))
import shop  # kit/demo/shop.py runs as a script: its sibling imports need that folder on the path


@pytest.fixture
def stock_db(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    proc, url = start_redis(tmp_path / "stock-db")
    redis.Redis.from_url(url).set("stock:A1", 7)
    try:
        yield proc, url
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def get_stock(app: Callable[..., Any], seconds_left: float) -> tuple[int, dict[str, Any], float]:
    environ: dict[str, Any] = {"PATH_INFO": "/stock/A1", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["HTTP_BAGGAGE"] = f"errorgate.deadline={int((time.time() + seconds_left) * 1000)}"
    status: list[str] = []
    started = time.monotonic()
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    return int(status[0].split()[0]), json.loads(body), time.monotonic() - started


def gets(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_caller_with_100ms_left_gets_deadline_exceeded_without_a_stock_db_call(stock_db: Any) -> None:
    _, url = stock_db
    app = shop.inventory_app(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5))
    before = gets(url)
    status, body, _ = get_stock(app, 0.1)
    assert (status, body["error"]) == (504, "deadline exceeded before the stock-db call")
    assert gets(url) == before  # no GET reached stock-db
    status, body, _ = get_stock(app, 2.0)  # with time for the call it is made
    assert (status, body) == (200, {"stock": 7})
    assert gets(url) == before + 1


def test_paused_stock_db_does_not_keep_the_caller_past_its_deadline(stock_db: Any) -> None:
    proc, url = stock_db
    app = shop.inventory_app(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5))
    get_stock(app, 2.0)  # a pooled connection, as in a running inventory
    os.kill(proc.pid, signal.SIGSTOP)
    status, _, seconds = get_stock(app, 0.1)
    assert status == 504
    assert seconds < 0.1  # before: 503 after the 0.5 s socket timeout, 0.4 s past the deadline
