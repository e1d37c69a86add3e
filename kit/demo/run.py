"""One command for the whole demo shop: ``python -m kit.demo`` (or ``make demo-shop``).

Starts errorgate (the embedded default config unless ``--gateway-config``), two redis-servers on
free loopback ports with temporary directories (the queue and inventory's ``stock-db``), then the
three services (inventory, orders, billing) sending OTLP to errorgate. Ctrl-C (or SIGTERM) stops
them all, services first so their last spans reach the gateway. ``--state FILE`` writes the
ports, URLs and process ids as JSON: the chaos experiments find the shop through it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "kit" / "demo" / "shop.py"
ROLES = ("inventory", "orders", "billing")  # start order: each one's dependencies come first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before opening port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port} within {timeout:.0f} s")


def wait_for_group(url: str, billing: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Billing serves no port: it is ready once its consumer group exists on ``orders``."""
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if billing.poll() is not None:
            raise RuntimeError(f"billing exited with {billing.returncode}")
        if client.exists("orders") and any(g["name"] == b"billing" for g in client.xinfo_groups("orders")):
            return
        time.sleep(0.05)
    raise RuntimeError(f"billing did not create its consumer group within {timeout:.0f} s")


def redis_argv(port: int, workdir: Path) -> list[str]:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(server).exists():
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    return [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--save", "", "--appendonly", "no"]  # fmt: skip


def spawn(
    argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C reaches only the launcher, which stops the children in order.
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True)


def service_env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "kit" / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class Stack:
    """The shop's processes; ``state`` is what ``--state`` writes (and the chaos probes read)."""

    def __init__(
        self,
        workdir: Path,
        gateway_config: Path | None = None,
        no_breaker: bool = False,
        no_idempotency: bool = False,
    ) -> None:
        self.workdir = workdir
        self.gateway_config = gateway_config
        self.no_breaker = no_breaker
        self.no_idempotency = no_idempotency
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.state: dict[str, Any] = {"workdir": str(workdir)}

    def start(self) -> dict[str, Any]:
        try:
            self._start_gateway()
            for name in ("queue", "stock-db"):
                self._start_redis(name)
            self._start_services()
        except BaseException:
            self.stop()
            raise
        return self.state

    def _start_gateway(self) -> None:
        ports = {k: free_port() for k in ("grpc", "http", "metrics")}
        data = self.workdir / "errorgate-data"
        env = {**os.environ, "ERRORGATE_DATA_DIR": str(data),
               "ERRORGATE_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
               "ERRORGATE_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
               "ERRORGATE_METRICS_ENDPOINT": f"127.0.0.1:{ports['metrics']}"}  # fmt: skip
        argv = [sys.executable, "-m", "errorgate", "serve"]
        if self.gateway_config:
            argv += ["--config", str(self.gateway_config)]
        proc = self.procs["errorgate"] = spawn(argv, env, self.workdir / "errorgate.log")
        wait_for(ports["metrics"], proc, "errorgate", timeout=60)
        wait_for(ports["grpc"], proc, "errorgate", timeout=60)
        self.state["errorgate"] = {**ports, "data_dir": str(data), "pid": proc.pid}

    def _start_redis(self, name: str) -> None:
        port = free_port()
        argv = redis_argv(port, self.workdir / name)
        proc = self.procs[name] = spawn(argv)
        wait_for(port, proc, f"redis-server ({name})")
        self.state[name] = {"url": f"redis://127.0.0.1:{port}/0", "port": port, "argv": argv, "pid": proc.pid}

    def _start_services(self) -> None:
        ports = {"inventory": free_port(), "orders": free_port()}
        env = service_env()
        common = ["--otlp", f"127.0.0.1:{self.state['errorgate']['grpc']}",
                  "--redis", self.state["queue"]["url"], "--stock-db", self.state["stock-db"]["url"],
                  "--inventory", f"http://127.0.0.1:{ports['inventory']}"]  # fmt: skip
        for role in ROLES:
            extra = ["--port", str(ports[role])] if role in ports else []
            if role == "orders":
                extra += ["--no-breaker"] * self.no_breaker + ["--no-idempotency"] * self.no_idempotency
            argv = [sys.executable, str(SHOP), role, *extra, *common]
            proc = self.procs[role] = spawn(argv, env, self.workdir / f"{role}.log")
            if role in ports:
                wait_for(ports[role], proc, role)
            url = {"url": f"http://127.0.0.1:{ports[role]}", "port": ports[role]} if role in ports else {}
            # argv: the network experiments restart inventory with its stock-db behind a netns.
            self.state[role] = {"pid": proc.pid, "argv": argv, **url}
        wait_for_group(self.state["queue"]["url"], self.procs["billing"])

    def stop(self) -> None:
        """Services first (they flush their spans on SIGTERM), then the gateway, then the redises;
        a process the chaos suite restarted is stopped through the pid the state names now."""
        for group in ((*reversed(ROLES), "errorgate"), ("queue", "stock-db")):
            for name in group:
                _terminate(self.procs.get(name))
                pid = self.state.get(name, {}).get("pid")
                proc = self.procs.get(name)
                if pid and (proc is None or pid != proc.pid):
                    _kill_pid(pid)


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _kill_pid(pid: int, within: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:  # the chaos actions run in this process: our child
                return
        except ChildProcessError:  # not our child: probe until it is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def smoke(state: dict[str, Any]) -> int:
    """One order, so a fresh shop shows traffic: stock for sku A1, then POST /orders."""
    import redis

    redis.Redis.from_url(state["stock-db"]["url"]).set("stock:A1", 1000)
    request = urllib.request.Request(
        f"{state['orders']['url']}/orders",
        data=b'{"sku": "A1", "qty": 1}',
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return int(r.status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kit.demo", description=__doc__.split("\n")[0])
    p.add_argument("--gateway-config", type=Path, help="errorgate config (default: the embedded default)")
    p.add_argument("--state", type=Path, help="write ports, URLs and pids here as JSON")
    p.add_argument("--no-breaker", action="store_true", help="orders without its circuit breaker")
    p.add_argument("--no-idempotency", action="store_true", help="orders without its idempotency middleware")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Explicit: a launcher started in the background by a script inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="errorgate-shop-") as tmp:
        stack = Stack(Path(tmp), args.gateway_config, args.no_breaker, args.no_idempotency)
        state = stack.start()
        try:
            if args.state:
                args.state.write_text(json.dumps(state, indent=2))
            print(f"first order: HTTP {smoke(state)}", flush=True)
            print(f'orders    {state["orders"]["url"]}/orders  (POST {{"sku": "A1", "qty": 1}})')
            print(f"inventory {state['inventory']['url']}/stock/A1")
            print(f"errorgate OTLP 127.0.0.1:{state['errorgate']['grpc']}, "
                  f"metrics http://127.0.0.1:{state['errorgate']['metrics']}/metrics")  # fmt: skip
            print("Ctrl-C stops everything.", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping…", flush=True)
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
