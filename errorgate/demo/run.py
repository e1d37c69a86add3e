"""``errorgate demo``: a gateway in-process on free ports with the embedded default config,
fed by five simulated services through the real OpenTelemetry SDK (gRPC and HTTP
exporters), then a summary of what went in and what came out.

Service time is compressed: the demo replays ``SIM_MINUTES`` minutes of traffic with
explicit timestamps, so episodes (transient blip, persistent failure, cascade) take
shape in a one-minute run exactly as they would live.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from errorgate.demo.report import print_report
from errorgate.demo.traffic import SIM_MINUTES, TrafficSimulator


def run_demo(duration: float = 60.0, quiet: bool = False) -> int:
    from errorgate.config import default_config_text, parse_config
    from errorgate.service.gateway import Gateway

    logging.getLogger("errorgate").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="errorgate-demo-") as tmp:
        data_dir = Path(tmp) / "data"
        env = {
            "ERRORGATE_GRPC_ENDPOINT": "127.0.0.1:0",
            "ERRORGATE_HTTP_ENDPOINT": "127.0.0.1:0",
            "ERRORGATE_METRICS_ENDPOINT": "127.0.0.1:0",
            "ERRORGATE_DATA_DIR": str(data_dir),
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            config = parse_config(default_config_text(), "<embedded default, demo ports>")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        gateway = Gateway(config)
        gateway.start()
        print(
            f"errorgate demo: gateway on grpc {gateway.grpc_endpoint}, http {gateway.http_endpoint}, "
            f"metrics http://{gateway.metrics_endpoint}/metrics",
            file=sys.stderr,
        )
        sim = TrafficSimulator(gateway.grpc_endpoint, gateway.http_endpoint, random.Random(42))
        started = time.monotonic()
        try:
            for minute in range(SIM_MINUTES):
                sim.run_minute(minute)
                # Pace the replay over the requested wall-clock duration.
                target = started + duration * (minute + 1) / SIM_MINUTES
                _progress(minute + 1, sim.sent, quiet)
                while time.monotonic() < target:
                    time.sleep(min(0.2, target - time.monotonic()))
            sim.shutdown()
        finally:
            if not quiet:
                print(file=sys.stderr)
            gateway.stop()
        print_report(sim.sent, gateway, data_dir / "out")
    return 0


def _progress(done: int, sent: Counter[str], quiet: bool) -> None:
    if quiet:
        return
    width = 30
    filled = int(width * done / SIM_MINUTES)
    line = (
        f"[{'#' * filled}{'.' * (width - filled)}] minute {done}/{SIM_MINUTES} of service time — "
        f"sent {sent['spans']} spans, {sent['logs']} log records, {sent['metric_points']} metric points"
    )
    if sys.stderr.isatty():
        print("\r" + line, end="", file=sys.stderr, flush=True)
    elif done % 5 == 0 or done == SIM_MINUTES:
        print(line, file=sys.stderr, flush=True)
