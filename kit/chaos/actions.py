"""Chaos Toolkit actions against the demo shop (``"module": "kit.chaos.actions"``): they break
a dependency (SIGKILL / SIGSTOP the stock-db redis, a poison message, a failing saga step) and
the rollbacks put it back. Each returns what it did, so the journal tells the story."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import redis

from kit.chaos import _shop
from kit.chaos._shop import Configuration


def mark(configuration: Configuration = None) -> dict[str, Any]:
    """Remember when the injection starts (errorgate probes only look at spans after it) and the
    inventory's request count (the retry-herd probe counts from there)."""
    state = _shop.load(configuration)
    stats = _shop.http(f"{state['inventory']['url']}/_admin/stats").body
    state["mark"] = {"ns": time.time_ns(), "inventory_requests": stats["requests"]}
    _shop.save(configuration, state)
    return state["mark"]


def seed_stock(configuration: Configuration = None) -> int:
    state = _shop.load(configuration)
    redis.Redis.from_url(state["stock-db"]["url"]).set(f"stock:{_shop.SKU}", _shop.STOCK)
    return _shop.STOCK


def kill_stock_db(configuration: Configuration = None) -> int:
    state = _shop.load(configuration)
    pid, port = state["stock-db"]["pid"], state["stock-db"]["port"]
    os.kill(pid, signal.SIGKILL)
    if _shop.poll(lambda: not _shop.port_open(port), within=5) is not True:
        raise RuntimeError(f"stock-db (pid {pid}) still answers on port {port} after SIGKILL")
    return int(pid)


def restart_stock_db(configuration: Configuration = None) -> int:
    """Start stock-db again on its port (a no-op when it is up) and restore its stock, as a
    restore from backup would: it runs without persistence, so a kill lost its data."""
    state = _shop.load(configuration)
    db = state["stock-db"]
    if not _shop.port_open(db["port"]):
        proc = subprocess.Popen(
            db["argv"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if _shop.poll(lambda: _shop.port_open(db["port"]), within=10) is not True:
            raise RuntimeError(f"stock-db did not come back on port {db['port']}")
        db["pid"] = proc.pid
        _shop.save(configuration, state)
    seed_stock(configuration)
    return int(db["pid"])


def pause_stock_db(configuration: Configuration = None) -> int:
    pid = _shop.load(configuration)["stock-db"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    return int(pid)


def resume_stock_db(configuration: Configuration = None) -> int:
    pid = _shop.load(configuration)["stock-db"]["pid"]
    os.kill(pid, signal.SIGCONT)
    return int(pid)


def publish_poison(configuration: Configuration = None) -> str:
    """An order event billing cannot validate (qty is not a number)."""
    client = _shop.queue(_shop.load(configuration))
    return str(client.xadd("orders", {"payload": b'{"sku": "A1", "qty": "lots"}'}).decode())


def arm_saga_failure(step: str = "ship", configuration: Configuration = None) -> dict[str, Any]:
    state = _shop.load(configuration)
    answer = _shop.http(f"{state['orders']['url']}/_admin/fail-step?step={step}", b"")
    if answer.status != 200:
        raise RuntimeError(f"could not arm the failure of saga step {step!r}: {answer.body}")
    return answer.body
