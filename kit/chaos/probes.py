"""Chaos Toolkit probes on the demo shop (``"module": "kit.chaos.probes"``).

Steady-state probes return a value the experiment's tolerance judges (an order answers 201, the
breaker is closed, the ledger and errorgate's item counts balance). Method probes check what must
happen *during* the injection and raise ``ActivityFailed`` when it does not, which the runner
(kit/chaos/run.py) treats as a failed experiment."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chaoslib.exceptions import ActivityFailed

from kit.chaos import _shop, gateway
from kit.chaos._shop import Configuration


def order_status(within: float = 0.0, configuration: Configuration = None) -> int:
    """The status of a fresh order; retried for ``within`` seconds until it is 201."""
    state = _shop.load(configuration)
    last: list[int] = []

    def attempt() -> bool:
        last.append(_shop.order(state).status)
        return last[-1] == 201

    _shop.poll(attempt, within, every=0.5)
    return last[-1]


def breaker_state(configuration: Configuration = None) -> str:
    state = _shop.load(configuration)
    return str(_shop.http(f"{state['orders']['url']}/_admin/stats").body["breaker"])


def ledger_balanced(within: float = 10.0, configuration: Configuration = None) -> bool:
    """Nothing acknowledged is lost in the shop: every order event on the stream was charged or
    parked in the DLQ, and billing holds none unacknowledged."""
    client = _shop.queue(_shop.load(configuration))

    def balanced() -> bool:
        pending = client.xpending("orders", "billing")["pending"] if client.exists("orders") else 0
        return bool(
            client.xlen("orders") == client.llen("charges") + client.xlen("orders:dlq") and pending == 0
        )

    return bool(_shop.poll(balanced, within))


def gateway_balanced(within: float = 20.0, configuration: Configuration = None) -> bool:
    """errorgate lost nothing: per signal, received = exported + dropped + dead-lettered (polled,
    since items in the assembly window are received and not yet exported)."""
    port = _shop.load(configuration)["errorgate"]["metrics"]
    return bool(_shop.poll(lambda: not gateway.unbalanced(gateway.item_counts(port)), within, every=0.5))


def breaker_opens(max_orders: int = 30, configuration: Configuration = None) -> dict[str, Any]:
    """Orders keep coming while inventory's database is down: the breaker must open and orders
    must then answer with the fallback at once instead of calling inventory."""
    state = _shop.load(configuration)
    for sent in range(1, max_orders + 1):
        answer = _shop.order(state)
        if answer.body.get("fallback"):
            if answer.status != 503 or answer.seconds > 0.5:
                raise ActivityFailed(f"fallback answer was {answer.status} after {answer.seconds:.2f} s")
            return {"orders_until_open": sent, "fallback_seconds": round(answer.seconds, 3),
                    "breaker": breaker_state(configuration)}  # fmt: skip
    raise ActivityFailed(f"no fallback answer in {max_orders} orders: the breaker never opened")


def paused_burst(
    orders: int = 8, budget: float = 1.0, slack: float = 0.5, max_attempts: int = 4,
    expect: str = "none", configuration: Configuration = None,
) -> dict[str, Any]:  # fmt: skip
    """``orders`` concurrent orders, each with a ``budget``-second deadline in baggage, while
    stock-db hangs (or is slow): each must be answered within its deadline (+ ``slack`` for
    HTTP), and the inventory must see at most ``max_attempts`` calls per order (bounded retries,
    no herd). ``expect``: how many may succeed, ``none`` (the default), ``all`` or ``any``."""
    if expect not in ("none", "all", "any"):
        raise ActivityFailed(f"expect: {expect!r} is not one of none, all, any")
    state = _shop.load(configuration)
    inventory = f"{state['inventory']['url']}/_admin/stats"
    before = _shop.http(inventory).body["requests"]

    def one(_: int) -> _shop.Answer:
        at_ms = int((time.time() + budget) * 1000)
        return _shop.order(state, headers={"baggage": f"errorgate.deadline={at_ms}"})

    with ThreadPoolExecutor(orders) as pool:
        answers = list(pool.map(one, range(orders)))
    time.sleep(slack)  # calls still in flight at inventory are counted too
    attempts = _shop.http(inventory).body["requests"] - before
    slowest = max(a.seconds for a in answers)
    figures = {"statuses": sorted(a.status for a in answers), "slowest_seconds": round(slowest, 3),
               "succeeded": sum(a.status == 201 for a in answers),
               "inventory_calls": attempts, "limit": orders * max_attempts}  # fmt: skip
    if slowest > budget + slack:
        raise ActivityFailed(f"an order took {slowest:.2f} s past its {budget} s deadline: {figures}")
    if attempts > orders * max_attempts:
        raise ActivityFailed(f"retry herd: {attempts} inventory calls for {orders} orders: {figures}")
    if expect == "all" and any(a.status != 201 for a in answers):
        raise ActivityFailed(
            f"an order failed though its deadline left time for the slow stock-db: {figures}"
        )
    if expect == "none" and any(a.status == 201 for a in answers):
        raise ActivityFailed(f"an order succeeded while stock-db was paused: {figures}")
    return figures


def no_duplicate_orders(clients: int = 5, configuration: Configuration = None) -> dict[str, Any]:
    """``clients`` submissions of one order with one Idempotency-Key (concurrent, as a client's
    retries after timeouts are), inventory shedding the first calls: one order, one charge."""
    state = _shop.load(configuration)
    client = _shop.queue(state)
    events, charges = client.xlen("orders"), client.llen("charges")
    _shop.http(f"{state['inventory']['url']}/chaos/flaky?n=2", b"")
    key = f"chaos-{uuid.uuid4().hex}"

    def submit(_: int) -> _shop.Answer:
        answer = _shop.order(state, key=key)
        for _retry in range(50):  # 409: the first submission is still in flight; retry as a client would
            if answer.status != 409:
                break
            time.sleep(0.1)
            answer = _shop.order(state, key=key)
        return answer

    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(submit, range(clients)))
    ids = {a.body.get("order") for a in answers}
    _shop.poll(lambda: client.llen("charges") > charges, within=10)
    time.sleep(0.5)  # a duplicate charge would land now
    figures = {"statuses": [a.status for a in answers], "order_ids": sorted(map(str, ids)),
               "new_events": client.xlen("orders") - events, "new_charges": client.llen("charges") - charges}  # fmt: skip
    if {a.status for a in answers} != {201} or len(ids) != 1:
        raise ActivityFailed(f"the retried submissions did not all replay one order: {figures}")
    if figures["new_events"] != 1 or figures["new_charges"] != 1:
        raise ActivityFailed(f"duplicate order: {figures}")
    return figures


def breaker_recovers(within: float = 15.0, configuration: Configuration = None) -> dict[str, Any]:
    """After the dependency is back: orders succeed again and the breaker closes (its half-open
    probes passed) within ``within`` seconds."""
    state = _shop.load(configuration)
    started = time.monotonic()
    closed = _shop.poll(lambda: _shop.order(state).status == 201 and breaker_state(configuration) == "closed",
                        within, every=0.5)  # fmt: skip
    if not closed:
        raise ActivityFailed(f"breaker still {breaker_state(configuration)!r} {within} s after the restart")
    return {"recovered_after_seconds": round(time.monotonic() - started, 2)}
