"""Chaos Toolkit probes for the queue, the saga and errorgate's classification
(``"module": "kit.chaos.probes_flow"``); they raise ``ActivityFailed`` when the pattern failed."""

from __future__ import annotations

from typing import Any

from chaoslib.exceptions import ActivityFailed

from kit.chaos import _shop, gateway
from kit.chaos._shop import Configuration


def poison_parked(configuration: Configuration = None) -> dict[str, Any]:
    """The poison message is parked in ``orders:dlq`` with its reason, and billing keeps going:
    a valid order published after it is charged."""
    state = _shop.load(configuration)
    client = _shop.queue(state)
    parked_before, charges = client.xlen("orders:dlq"), client.llen("charges")
    answer = _shop.order(state)
    if answer.status != 201:
        raise ActivityFailed(f"the order after the poison message was refused: {answer.status} {answer.body}")
    parked = _shop.poll(lambda: client.xlen("orders:dlq") > 0 and client.llen("charges") > charges, within=10)
    entries = client.xrange("orders:dlq")
    if not parked or not entries:
        raise ActivityFailed(f"dlq={client.xlen('orders:dlq')}, charges {charges}->{client.llen('charges')}")
    reason = entries[-1][1].get(b"dlq.reason", b"").decode()
    if "ValidationError" not in reason:
        raise ActivityFailed(f"parked without the validation reason: {reason!r}")
    return {"parked": len(entries) - parked_before + 1, "reason": reason[:120], "charged_after": True}


def saga_compensated(step: str = "ship", configuration: Configuration = None) -> dict[str, Any]:
    """A checkout whose ``step`` fails is compensated: every started step undone, newest first."""
    state = _shop.load(configuration)
    answer = _shop.http(f"{state['orders']['url']}/checkout", b"{}")
    saga_id = answer.body.get("saga", "")
    log = [e.decode().partition(" ")[2] for e in _shop.queue(state).lrange("saga:log", 0, -1)
           if e.decode().startswith(f"{saga_id} ")]  # fmt: skip
    expected = ["do reserve", "do charge", "undo ship", "undo charge", "undo reserve"]
    if (
        answer.status != 409
        or answer.body.get("status") != "compensated"
        or log != expected[: len(log)]
        or len(log) != len(expected)
    ):
        raise ActivityFailed(f"saga {saga_id}: {answer.status} {answer.body}, log {log}, expected {expected}")
    return {"saga": saga_id, "log": log}


def classified(
    service: str, span: str, kind: str | None = None, origin_service: str | None = None,
    category: str | None = None, within: float = 20.0, configuration: Configuration = None,
) -> dict[str, Any]:  # fmt: skip
    """errorgate classified ``span`` of ``service`` (since the experiment's mark) with this kind,
    origin service and/or category; waits ``within`` seconds for the trace to be assembled."""
    state = _shop.load(configuration)
    want = {"errorgate.error.kind": kind, "errorgate.error.origin_service": origin_service,
            "errorgate.error.category": category}  # fmt: skip
    want = {k: v for k, v in want.items() if v is not None}
    seen: list[dict[str, object]] = []

    def found() -> bool:
        seen[:] = [a for svc, name, a in gateway.spans(state["errorgate"]["data_dir"], state["mark"]["ns"])
                   if svc == service and name == span and "errorgate.error.kind" in a]  # fmt: skip
        return any(all(a.get(k) == v for k, v in want.items()) for a in seen)

    if not _shop.poll(found, within, every=0.5):
        got = [{k: a.get(k) for k in want} for a in seen][:5]
        raise ActivityFailed(f"{service} {span!r}: no span classified {want}; classified as {got}")
    return {"matched": sum(all(a.get(k) == v for k, v in want.items()) for a in seen), **want}
