"""Chaos Toolkit actions for the network experiments (``"module": "kit.chaos.actions_net"``):
stock-db moves behind a network namespace of its own (kit/chaos/network.py), inventory is
restarted to reach it there, faults are injected on that link and healed, and ``restore`` puts
the shop back as it was (inventory on the loopback stock-db, namespace and its processes gone).
``restore`` is each experiment's last method step and its rollback: it runs even after a failure
and does nothing when there is nothing to undo."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import redis

from kit.chaos import _shop
from kit.chaos._shop import Configuration
from kit.chaos.network import Netns
from kit.demo.run import _kill_pid, redis_argv, service_env, wait_for

PORT = 6379  # inside the namespace the dependency has its usual port to itself


def _netns(state: dict[str, Any]) -> Netns:
    if "netns" not in state:
        raise RuntimeError("no network namespace: run isolate_stock_db first")
    return Netns(**state["netns"])


def _restart_inventory(state: dict[str, Any], stock_db_url: str) -> int:
    """Inventory again on its port, with ``--stock-db`` pointing at ``stock_db_url``."""
    inv = state["inventory"]
    _kill_pid(inv["pid"])
    argv = list(inv["argv"])
    argv[argv.index("--stock-db") + 1] = stock_db_url
    log = Path(state["workdir"]) / "inventory.log"
    proc = subprocess.Popen(
        argv, env=service_env(), stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_for(inv["port"], proc, "inventory")
    inv.update(pid=proc.pid, argv=argv)
    return proc.pid


def isolate_stock_db(configuration: Configuration = None) -> dict[str, Any]:
    """A fresh stock-db inside a new namespace (seeded with the same stock), inventory using it."""
    state = _shop.load(configuration)
    if "netns" in state:
        raise RuntimeError(f"a network namespace is already in use: {state['netns']['name']}")
    ns = Netns.fresh()
    ns.create()
    state["netns"] = ns.describe()
    _shop.save(configuration, state)  # from here on, restore() can find and remove it
    workdir = Path(state["workdir"]) / "stock-db-netns"
    argv = redis_argv(PORT, workdir)
    # The namespace is reachable only through this host's veth: protected mode (loopback-only
    # when no password is set) would refuse the host, which is the one client it has.
    argv[argv.index("127.0.0.1")] = ns.ns_addr
    ns.spawn([*argv, "--protected-mode", "no"])
    url = f"redis://{ns.ns_addr}:{PORT}/0"
    db = redis.Redis.from_url(url, socket_timeout=1)
    if not _shop.poll(lambda: _ping(db), within=10):
        raise RuntimeError(f"stock-db did not answer at {ns.ns_addr}:{PORT} inside {ns.name}")
    db.set(f"stock:{_shop.SKU}", _shop.STOCK)
    state["isolated_stock_db"] = url
    pid = _restart_inventory(state, url)
    _shop.save(configuration, state)
    return {**ns.describe(), "stock_db": url, "inventory_pid": pid}


def _ping(db: redis.Redis) -> bool:
    try:
        return bool(db.ping())
    except redis.RedisError:
        return False


def impair_link(
    delay_ms: float = 0, jitter_ms: float = 0, loss_pct: float = 0, configuration: Configuration = None
) -> dict[str, Any]:
    state = _shop.load(configuration)
    ns = _netns(state)
    figures = ns.impair(delay_ms, jitter_ms, loss_pct)
    state["netns"] = ns.describe()
    _shop.save(configuration, state)
    return figures


def partition_link(configuration: Configuration = None) -> dict[str, Any]:
    state = _shop.load(configuration)
    return _netns(state).partition()


def heal_link(configuration: Configuration = None) -> dict[str, Any]:
    state = _shop.load(configuration)
    ns = _netns(state)
    figures = ns.heal()
    state["netns"] = ns.describe()
    _shop.save(configuration, state)
    return figures


def restore(configuration: Configuration = None) -> dict[str, Any]:
    """Inventory back on the loopback stock-db, the namespace (and what runs in it) removed."""
    state = _shop.load(configuration)
    if "netns" not in state:
        return {"restored": False}
    argv = state["inventory"]["argv"]
    if argv[argv.index("--stock-db") + 1] != state["stock-db"]["url"]:
        _restart_inventory(state, state["stock-db"]["url"])
    netns = state.pop("netns")
    state.pop("isolated_stock_db", None)
    Netns(**netns).delete()
    _shop.save(configuration, state)
    return {"restored": True, "removed": netns["name"]}
