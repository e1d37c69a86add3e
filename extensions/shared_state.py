"""Extension ``redis``: the shared error state of replicas behind a trace-id load balancer.

Split by trace id, each of N replicas sees 1/N of every error group: episode buckets go sparse
(a persistent failure reads as intermittent), flood budgets multiply by N and burn-rate minimums
are reached N times later. Enabled (``extensions: {redis: {endpoint: redis://HOST:PORT/DB}}`` and
``service.extensions: [redis]``), ``classify`` and ``sample`` keep that state in Redis; without
it the state stays in the process (the embedded default).

Also shared: ``classify``'s incident candidates (failing traces per origin in the incident
window, and which replica opens an incident) and ``sample``'s decisions for late spans (a span
arriving after its trace was decided follows that decision on any replica, ``decision_ttl``).

What this module owns is the connection and its failure mode; what is stored, and how, is the
processors' (``errorgate.processors.errorstate``). Each processed batch costs at most one round
trip per component (a pipeline of Lua scripts, ``run``). When Redis cannot answer within ``timeout`` the batch falls
back to the processor's local state, ``errorgate_shared_state_fallbacks_total`` counts it, one
line is logged per transition, and a reconnection is tried at most every ``retry_interval``:
the data path never waits longer than ``timeout`` per batch.

The client is made on first use in the process that uses it, and again after a fork: the
processors run in a worker process, and a connection must never be shared across a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from prometheus_client import Counter, Gauge
from pydantic import Field, field_validator

from errorgate.component import ComponentConfig, ComponentContext, Extension, Factory
from errorgate.config import Duration
from errorgate.pipeline.assembly.assembler import get_or_create

log = logging.getLogger("errorgate.shared_state")


class RedisConfig(ComponentConfig):
    endpoint: str = Field(
        default="redis://127.0.0.1:6379/0", description="redis://HOST:PORT/DB (rediss:// for TLS)"
    )
    timeout: Duration = Field(
        default=0.05, gt=0, description="longest a batch waits for Redis before using local state"
    )
    retry_interval: Duration = Field(
        default=1.0, ge=0, description="while Redis is down, how often a batch tries it again"
    )
    key_prefix: str = Field(
        default="errorgate:", description="prefix of every key (several gateways per Redis)"
    )
    state_ttl: Duration = Field(
        default=90_000.0, gt=0, description="an error group's state is forgotten this long after it was seen"
    )
    decision_ttl: Duration = Field(
        default=3600.0, gt=0, description="how long late spans of a decided trace follow its decision"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.hostname or parsed.path):
            raise ValueError(f"endpoint must look like redis://HOST:PORT/DB, got {value!r}")
        return value


class Script:
    """A Lua script, loaded once per connection and called by its SHA (``EVALSHA``)."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha: str | None = None


class RedisStateExtension(Extension):
    """The connection to the shared state, with the fall-back bookkeeping."""

    def __init__(self, config: RedisConfig, context: ComponentContext) -> None:
        self.config = config
        self.prefix = config.key_prefix
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time of the failure; None while shared
        self._next_try = 0.0
        # Round trips and commands made, for ``errorgate_shared_state_round_trips_total`` and tests.
        self.round_trips = 0
        self.calls = 0
        registry = context.telemetry.registry
        self._fallbacks = get_or_create(
            registry,
            "errorgate_shared_state_fallbacks",
            lambda: Counter(
                "errorgate_shared_state_fallbacks",
                "Batches that used local state because the shared state (Redis) did not answer",
                ["component"],
                registry=registry,
            ),
        )
        self._trips = get_or_create(
            registry,
            "errorgate_shared_state_round_trips",
            lambda: Counter(
                "errorgate_shared_state_round_trips",
                "Round trips to the shared state (one per processed batch and component)",
                ["component"],
                registry=registry,
            ),
        )
        self._up = get_or_create(
            registry,
            "errorgate_shared_state_up",
            lambda: Gauge(
                "errorgate_shared_state_up",
                "1 while the shared state (Redis) answers, 0 while components use local state",
                registry=registry,
            ),
        )
        self._up.set(1)

    # ------------------------------------------------------------------ the one call per batch

    def run(
        self, component: str, calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]]
    ) -> list[Any] | None:
        """Run ``calls`` (script, keys, args) in one pipelined round trip; their replies in order,
        or None when Redis is down or slow (the caller then uses its local state)."""
        now = time.monotonic()
        if self._down_since is not None and now < self._next_try:
            self._fallbacks.labels(component).inc()
            return None
        try:
            with self._lock:  # one pipeline at a time on this process's connection
                replies = self._pipeline(calls)
        except Exception as e:  # any client error: connection, timeout, script, reply
            self._failed(component, now, e)
            return None
        self.round_trips += 1
        self.calls += len(calls)
        self._trips.labels(component).inc()
        if self._down_since is not None:
            log.warning(
                "shared state at %s is back after %.1fs: %s uses it again",
                self._safe_endpoint(),
                now - self._down_since,
                component,
            )
            self._down_since = None
            self._up.set(1)
        return replies

    def _pipeline(self, calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]]) -> list[Any]:
        client = self._connection()
        for attempt in (0, 1):
            pipe = client.pipeline(transaction=False)
            for script, keys, args in calls:
                if script.sha is None:
                    script.sha = client.script_load(script.source)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return list(pipe.execute())
            except Exception as e:
                # After a Redis restart (or FLUSH) the scripts are gone: load them again, once.
                if attempt or type(e).__name__ != "NoScriptError":
                    raise
                for script, _, _ in calls:
                    script.sha = None
        raise AssertionError("unreachable")

    def _connection(self) -> Any:
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            import redis  # the client library is needed only where the extension is enabled

            # Made here, in the process that uses it (after any fork): never inherited.
            self._client = redis.Redis.from_url(
                self.config.endpoint,
                socket_timeout=self.config.timeout,
                socket_connect_timeout=self.config.timeout,
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._pid = pid
        return self._client

    def _failed(self, component: str, now: float, error: Exception) -> None:
        self._fallbacks.labels(component).inc()
        self._next_try = now + self.config.retry_interval
        if self._client is not None and self._pid == os.getpid():
            try:
                self._client.connection_pool.disconnect()  # a half-read reply must not be reused
            except Exception:
                pass
        if self._down_since is None:
            self._down_since = now
            self._up.set(0)
            log.warning(
                "shared state at %s unavailable (%s: %s): %s uses local state until it answers",
                self._safe_endpoint(),
                type(error).__name__,
                str(error)[:200],
                component,
            )

    def _safe_endpoint(self) -> str:
        parsed = urlparse(self.config.endpoint)
        return f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}{parsed.path}"  # no password

    @property
    def shared(self) -> bool:
        """Whether the last round trip reached Redis."""
        return self._down_since is None

    def shutdown(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            try:
                self._client.close()
            except Exception:
                pass
        self._client = None


def create_redis(config: RedisConfig, context: ComponentContext) -> Extension:
    return RedisStateExtension(config, context)


factory: Factory[RedisConfig, Extension] = Factory("redis", RedisConfig, create_redis, RedisStateExtension)
