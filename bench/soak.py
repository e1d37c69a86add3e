"""``python -m bench --soak MINUTES``: memory of the embedded default under a steady load.

``errorgate serve`` with no config (the embedded default: every processor, the file exporter)
gets the benchmark's traffic — unique trace ids, and every log body a value never seen before
(``--unique-bodies``) — at a steady rate well below its maximum (``--soak-fraction`` of the
bare proxy's rate, measured first), for MINUTES minutes. Every 5 s the RSS of the gateway's
process tree is read (gateway, processor worker, redact's detection workers, the forkserver);
each minute's figure is the median of its last 30 s of samples, so one garbage collection or
allocator hiccup does not make a checkpoint. It prints the tree's RSS at minutes 1, 5, 10, 20
(those within the run) and the last, the change from minute 5 to the end in percent (the goal:
within ±5 %) for the whole tree and without redact's detection workers (they start whole, a
spaCy model each, on the first large miss set, which may come after minute 5), RSS per role,
and whether every received item is accounted for.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import children, free_port, log_tail, rss_mib, tree_pids, wait_port

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SAMPLE_EVERY = 5.0
CHECKPOINTS = (1, 5, 10, 20)
FLAT_WITHIN = 5.0  # percent, minute 5 to the end


@dataclass
class SoakResult:
    minutes: float
    rate: float
    per_minute: dict[int, float] = field(default_factory=dict)  # tree RSS MiB at minute k
    roles_per_minute: dict[int, dict[str, float]] = field(default_factory=dict)
    loadgen: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)

    def change_percent(self, without_detection: bool = False) -> float:
        """From minute 5 to the last; ``without_detection``: leaving out redact's detection
        workers, which appear whole (a spaCy model each, ~170 MiB, and their forkserver) on the
        first miss set big enough to be worth shipping, whenever that comes: a step, not growth."""
        last = max(self.per_minute, default=0)
        if 5 not in self.per_minute or last <= 5:
            return float("nan")

        def at(minute: int) -> float:
            less = self.roles_per_minute[minute]["detection"] if without_detection else 0.0
            return self.per_minute[minute] - less

        return (at(last) / at(5) - 1) * 100


def roles(gateway: int) -> dict[str, float]:
    """RSS per role in the gateway's tree: gateway -> forkserver -> processor worker ->
    forkserver -> detection workers. The worker's forkserver counts with the detection workers
    (it starts with them); the gateway's forkserver and the resource tracker are "other"."""
    out = {"gateway": rss_mib(gateway), "worker": 0.0, "detection": 0.0, "other": 0.0}
    for helper in children(gateway):
        out["other"] += rss_mib(helper)
        for worker in children(helper):
            out["worker"] += rss_mib(worker)
            for server in children(worker):
                out["detection"] += sum(rss_mib(p) for p in tree_pids(server))
    return out


def metric_totals(port: int) -> dict[str, float]:
    """received / exported / dropped / dead-lettered items, summed over signals."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    names = {
        "errorgate_received_items_total": "received",
        "errorgate_exported_items_total": "exported",
        "errorgate_dropped_items_total": "dropped",
        "errorgate_dead_lettered_items_total": "dead_lettered",
        "errorgate_queue_items": "queued",
        "errorgate_assembly_traces": "held_traces",
    }
    out = dict.fromkeys(names.values(), 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            out[names[name]] += float(line.rsplit(" ", 1)[1])
    return out


def run(minutes: float, rate: float, concurrency: int = 8, body_chars: int = 0) -> SoakResult:
    result = SoakResult(minutes, rate)
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="eg-soak-") as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ERRORGATE_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
            "ERRORGATE_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
            "ERRORGATE_METRICS_ENDPOINT": f"127.0.0.1:{metrics_port}",
            "ERRORGATE_DATA_DIR": f"{tmp}/data",
        }
        # Its log goes to a file: a pipe read only at exit blocks the gateway once 64 KiB are
        # written (as it froze the Collector's tail_sampling peer in make bench).
        log_path = Path(tmp) / "stderr.log"
        with log_path.open("wb") as log:
            gateway = subprocess.Popen(
                [PY, "-m", "errorgate", "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            wait_port(grpc_port, 120)
            gen = subprocess.Popen(
                [
                    *(PY, "-m", "bench.loadgen", "--target", f"127.0.0.1:{grpc_port}"),
                    *("--duration", str(minutes * 60), "--concurrency", str(concurrency)),
                    *("--rate", str(rate), "--unique-bodies", "--body-chars", str(body_chars), "--seed", "1"),
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            _watch(gateway.pid, gen, result)
            out, _ = gen.communicate()
            result.loadgen = json.loads(out.strip().splitlines()[-1])
            time.sleep(25)  # the last traces' assembly window (10 s) and log hold (20 s at most)
            result.counts = metric_totals(metrics_port)
        finally:
            gateway.terminate()
            try:
                gateway.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gateway.kill()
            if gateway.returncode not in (0, -15, None):
                print(f"  ! gateway exited with {gateway.returncode}: {log_tail(log_path)}", file=sys.stderr)
    return result


def _watch(gateway: int, gen: subprocess.Popen[str], result: SoakResult) -> None:
    """Sample the tree's RSS until the load generator ends; one checkpoint per minute."""
    start = time.monotonic()
    samples: list[tuple[float, float, dict[str, float]]] = []
    minute = 1
    while gen.poll() is None:
        time.sleep(SAMPLE_EVERY - (time.monotonic() - start) % SAMPLE_EVERY)
        elapsed = time.monotonic() - start
        by_role = roles(gateway)
        samples.append((elapsed, sum(by_role.values()), by_role))
        if elapsed >= minute * 60 - 1:
            recent = [s for s in samples if s[0] > minute * 60 - 31]
            result.per_minute[minute] = statistics.median(s[1] for s in recent)
            result.roles_per_minute[minute] = {
                role: statistics.median(s[2][role] for s in recent) for role in by_role
            }
            print(
                f"soak minute {minute}: {result.per_minute[minute]:.0f} MiB ("
                + ", ".join(f"{r} {v:.0f}" for r, v in result.roles_per_minute[minute].items())
                + ")",
                file=sys.stderr,
                flush=True,
            )
            minute += 1


def report(result: SoakResult) -> None:
    print(f"\n== soak: embedded default, {result.rate:,.0f} items/s offered for {result.minutes:g} min ==")
    achieved = result.loadgen.get("items_per_s", float("nan"))
    failed = result.loadgen.get("failed_requests", float("nan"))
    print(
        f"achieved {achieved:,.0f} items/s, p50 {result.loadgen.get('p50_ms', float('nan')):.1f} ms, ", end=""
    )
    print(f"p99 {result.loadgen.get('p99_ms', float('nan')):.1f} ms, failed requests {failed:.0f}")
    last = max(result.per_minute, default=0)
    print(f"{'minute':>7}{'tree MiB':>10}{'gateway':>9}{'worker':>8}{'detect':>8}{'other':>7}")
    for minute in sorted({*(m for m in CHECKPOINTS if m <= last), last} - {0}):
        r = result.roles_per_minute[minute]
        print(
            f"{minute:>7}{result.per_minute[minute]:>10.0f}{r['gateway']:>9.0f}{r['worker']:>8.0f}"
            f"{r['detection']:>8.0f}{r['other']:>7.0f}"
        )
    for label, change in (
        ("", result.change_percent()),
        (" without detection workers", result.change_percent(without_detection=True)),
    ):
        verdict = "flat" if abs(change) <= FLAT_WITHIN else "NOT flat"
        print(
            f"change minute 5 -> {last}{label}: {change:+.1f} % ({verdict}: goal within ±{FLAT_WITHIN:g} %)"
        )
    c = result.counts
    if c:
        pending = c["queued"]
        balance = c["received"] - c["exported"] - c["dropped"] - c["dead_lettered"] - pending
        print(
            f"items: received {c['received']:,.0f} = exported {c['exported']:,.0f} + dropped "
            f"{c['dropped']:,.0f} + dead-lettered {c['dead_lettered']:,.0f} + queued {pending:,.0f}"
            f" (unaccounted {balance:,.0f}; traces still held {c['held_traces']:,.0f})"
        )
