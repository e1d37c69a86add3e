"""The shop's checkout saga (served by ``orders``): reserve stock → charge → ship, each step
logged to the Redis list ``saga:log`` with its compensation, so a failing step is visibly undone
newest first. ``POST /_admin/fail-step?step=ship`` makes the next checkout's ``ship`` step fail
once (the chaos experiment's injection)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis
from errorgate_kit.saga import Saga, SagaStore, Step

STEPS = ("reserve", "charge", "ship")


class StepFailed(RuntimeError):
    """The injected failure of one saga step."""


def build_saga(client: redis.Redis, store: SagaStore, fail_once: dict[str, bool]) -> Saga:
    def log(saga_id: str, what: str) -> None:
        client.rpush("saga:log", f"{saga_id} {what}")

    def make(name: str) -> Step:
        def action(data: dict[str, Any]) -> str:
            if fail_once.pop(name, False):
                raise StepFailed(f"injected failure in saga step {name!r}")
            log(data["saga_id"], f"do {name}")
            return "done"

        def compensate(data: dict[str, Any]) -> None:
            log(data["saga_id"], f"undo {name}")

        return Step(name, action, compensate)

    return Saga("checkout", [make(n) for n in STEPS], store)


def checkout_app(client: redis.Redis, store_url: str) -> Callable[..., Iterable[bytes]]:
    """``POST /checkout`` runs the saga; ``POST /_admin/fail-step?step=S`` arms a one-shot failure."""
    fail_once: dict[str, bool] = {}
    lock = threading.Lock()
    saga = build_saga(client, SagaStore(store_url), fail_once)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/_admin/fail-step":
            step = environ.get("QUERY_STRING", "").partition("=")[2]
            if step not in STEPS:
                return _json(start_response, "400 Bad Request", {"error": f"unknown step {step!r}: {STEPS}"})
            with lock:
                fail_once[step] = True
            return _json(start_response, "200 OK", {"armed": step})
        saga_id = uuid.uuid4().hex
        result = saga.run(saga_id, {"saga_id": saga_id})
        status = "201 Created" if result.status == "completed" else "409 Conflict"
        return _json(
            start_response, status, {"saga": saga_id, "status": result.status, "error": result.error}
        )

    return app


def _json(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    start_response(status, [("content-type", "application/json")])
    return [json.dumps(body).encode()]
