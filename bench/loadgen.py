"""Load generator (run as its own process): ``concurrency`` threads send the traffic mix over
OTLP/gRPC as fast as the target acknowledges (or at ``rate`` items/s), for ``duration`` seconds.
Prints one JSON line."""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time

import grpc

from bench.traffic import build_templates, patched

# How long past the load window a request already sent may still be answered.
GRACE_S = 5.0


def _identity(b: bytes) -> bytes:
    return b


def run(
    target: str,
    duration: float,
    concurrency: int,
    seed: int,
    rate: float = 0.0,
    unique_bodies: bool = False,
    body_chars: int = 0,
) -> dict[str, float]:
    """``rate`` > 0: requests leave on a schedule of ``rate`` items/s (a steady load, as in a soak).
    A request behind schedule leaves at once, but by at most a second: a target that slowed
    down gets the load it was offered, not a burst making up for all of it."""
    templates = build_templates(seed, time.time_ns(), unique_bodies, body_chars)
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=20)
    calls = {
        t.path: channel.unary_unary(t.path, request_serializer=_identity, response_deserializer=_identity)
        for t in templates
    }
    counter = itertools.count(seed << 40)
    lock = threading.Lock()
    latencies: list[float] = []
    items = [0, 0, 0]  # acked items, acked requests, failed requests
    stop_at = time.monotonic() + duration
    schedule = [time.monotonic()]  # when the next request is due (with ``rate``)

    def worker(offset: int) -> None:
        local_lat: list[float] = []
        acked = reqs = failed = 0
        i = offset
        while time.monotonic() < stop_at:
            t = templates[i % len(templates)]
            i += 1
            if rate > 0:
                now = time.monotonic()
                with lock:
                    due = max(schedule[0], now - 1.0)
                    schedule[0] = due + t.items / rate
                wait = due - now
                if wait > 0:
                    time.sleep(wait)
            payload = patched(t, next(counter))
            begin = time.perf_counter()
            try:
                # A call still unanswered GRACE_S after the window closes fails: a target that
                # stalls shows as failed requests, not as a run stretched by the 30 s timeout.
                calls[t.path](payload, timeout=min(30.0, stop_at + GRACE_S - time.monotonic()))
            except grpc.RpcError:
                failed += 1
                time.sleep(0.01)
                continue
            local_lat.append(time.perf_counter() - begin)
            acked += t.items
            reqs += 1
        with lock:
            latencies.extend(local_lat)
            items[0] += acked
            items[1] += reqs
            items[2] += failed

    def refresh_clock() -> None:
        # Telemetry time follows the wall clock (1 s steps), as live traffic's does: windows,
        # episodes and flood budgets in errorgate then see time pass during the run.
        nonlocal templates
        while not finished.wait(1.0):
            templates = build_templates(seed, time.time_ns(), unique_bodies, body_chars)

    finished = threading.Event()
    clock = threading.Thread(target=refresh_clock, daemon=True)
    clock.start()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    start = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - start
    finished.set()
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        )

    channel.close()
    return {
        "elapsed_s": elapsed,
        "acked_items": items[0],
        "acked_requests": items[1],
        "failed_requests": items[2],
        "items_per_s": items[0] / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.0, help="items/s (0: as fast as acknowledged)")
    ap.add_argument("--unique-bodies", action="store_true", help="every log body a value never seen before")
    ap.add_argument(
        "--body-chars", type=int, default=0, help="with --unique-bodies: pad bodies to this length"
    )
    a = ap.parse_args()
    print(json.dumps(run(a.target, a.duration, a.concurrency, a.seed, a.rate, a.unique_bodies, a.body_chars)))
