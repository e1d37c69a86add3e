"""Paired A/B of ``classify`` → ``sample`` in-process, with state local (the embedded default)
and shared in a real ``redis-server`` (the ``redis`` extension), alternating rounds: items/s
(wall clock: a round trip is waiting, not CPU), Redis round trips, script calls and Redis's
own CPU per batch and per 1,000 items.

    .venv/bin/python -m bench.shared_state [--batches 1500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.processors import make_batches
from bench.procs import free_port
from errorgate.component import EXTENSIONS, PROCESSORS, ComponentContext, Extensions, Processor
from errorgate.extensions import shared_state
from errorgate.extensions.shared_state import RedisConfig, RedisStateExtension
from errorgate.signals import copy_request
from errorgate.telemetry import Telemetry

EXTENSIONS.register(shared_state.factory)


def _processors(tmp: Path, ext: RedisStateExtension | None) -> list[Processor]:
    telemetry = Telemetry()
    extensions = Extensions({"redis": ext} if ext is not None else {})
    procs = []
    for name, settings in (("classify", {}), ("sample", {"decision_wait": "1s"})):
        factory = PROCESSORS.get(name)
        assert factory is not None
        context = ComponentContext(name, tmp, telemetry, logging.getLogger("bench"), extensions)
        procs.append(factory.create(factory.config_model.model_validate(settings), context))
    return procs


def _round(batches: list[Any], tmp: Path, ext: RedisStateExtension | None) -> tuple[float, int]:
    procs = _processors(tmp, ext)
    work = [b.__class__(b.signal, copy_request(b.request), received_at=b.received_at) for b in batches]
    for b in work:
        b.notes["complete_traces"] = True
    items = sum(b.item_count() for b in work)
    begin = time.perf_counter()
    for b in work:
        out = procs[0].process(b)
        for o in out.batches:
            procs[1].process(o)
    return time.perf_counter() - begin, items


def _redis_cpu(client: Any) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.shared_state", description=__doc__)
    ap.add_argument("--batches", type=int, default=1500, help="trace requests (50 spans each) per round")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import redis

    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        port = free_port()
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp_dir, "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            batches = make_batches("traces", args.batches)
            rates: dict[str, list[float]] = {"local": [], "redis": []}
            for r in range(args.rounds):
                local_s, items = _round(batches, tmp / f"l{r}", None)
                rates["local"].append(items / local_s)
                client.flushall()
                client.config_resetstat()
                cpu0 = _redis_cpu(client)
                context = ComponentContext("redis", tmp, Telemetry(), logging.getLogger("bench"))
                config = RedisConfig.model_validate(
                    {"endpoint": f"redis://127.0.0.1:{port}/0", "timeout": "1s"}
                )
                ext = RedisStateExtension(config, context)
                redis_s, items = _round(batches, tmp / f"r{r}", ext)
                rates["redis"].append(items / redis_s)
                cpu = _redis_cpu(client) - cpu0
                stats = {
                    k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()
                }
                print(
                    f"round {r + 1}: local {rates['local'][-1]:,.0f} items/s, redis {rates['redis'][-1]:,.0f} items/s; "
                    f"{ext.round_trips / args.batches:.2f} round trips and {stats.get('evalsha', 0) / args.batches:.2f} "
                    f"script calls per batch ({items / args.batches:.0f} spans), Redis CPU "
                    f"{1000 * cpu / args.batches:.2f} ms per batch = {1000 * cpu / items * 1000:.2f} ms per 1,000 items, "
                    f"fallbacks {int(not ext.shared)}"
                )
            ratio = statistics.median(rates["redis"]) / statistics.median(rates["local"])
            print(
                f"median: local {statistics.median(rates['local']):,.0f} items/s, redis "
                f"{statistics.median(rates['redis']):,.0f} items/s, ratio {ratio:.2f}"
            )
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
