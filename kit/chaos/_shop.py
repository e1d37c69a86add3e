"""How the chaos probes and actions reach the demo shop: the launcher's state file (named by the
experiment's ``shop_state`` configuration, from the ``SHOP_STATE`` environment variable) and small
HTTP/Redis helpers. Kept apart so probes.py and actions.py stay about the experiments."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

Configuration = dict[str, Any] | None
SKU = "A1"
STOCK = 1_000_000  # enough that no experiment runs out of stock


def state_path(configuration: Configuration) -> Path:
    path = (configuration or {}).get("shop_state")
    if not path:
        raise RuntimeError("no shop state: set SHOP_STATE to the file `python -m kit.demo --state` wrote")
    return Path(path)


def load(configuration: Configuration) -> dict[str, Any]:
    return dict(json.loads(state_path(configuration).read_text()))


def save(configuration: Configuration, state: dict[str, Any]) -> None:
    path = state_path(configuration)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)  # atomic: the launcher may read it while stopping


def queue(state: dict[str, Any]) -> Any:
    # Any: redis-py types every reply as a union of sync/async and bytes/str; the probes read bytes.
    return redis.Redis.from_url(state["queue"]["url"], socket_timeout=5)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    seconds: float


def http(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 15
) -> Answer:
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json", **(headers or {})}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, raw = int(r.status), r.read()
    except urllib.error.HTTPError as e:
        status, raw = int(e.code), e.read()
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {"raw": raw.decode(errors="replace")}
    return Answer(
        status, parsed if isinstance(parsed, dict) else {"value": parsed}, time.monotonic() - started
    )


def order(state: dict[str, Any], key: str | None = None, headers: dict[str, str] | None = None) -> Answer:
    extra = {**({"Idempotency-Key": key} if key else {}), **(headers or {})}
    return http(f"{state['orders']['url']}/orders", json.dumps({"sku": SKU, "qty": 1}).encode(), extra)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def poll(check: Any, within: float, every: float = 0.2) -> Any:
    """``check()`` until it returns something truthy or ``within`` seconds pass; its last value."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)
