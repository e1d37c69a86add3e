"""A dependency behind a network of its own: a network namespace joined to the host by a veth
pair on a private /30 (iproute2), and the faults injected on that link.

Latency and loss use ``tc qdisc … netem`` when the kernel has ``sch_netem``; a kernel built
without it (some VM kernels) gets the same delay/jitter/loss from an iptables ``NFQUEUE`` rule in
the namespace and kit/chaos/impair.py, which gives each queued packet its verdict later or drops
it. Which one ran is reported (``"injected_with"``). A partition takes the host's end of the link
down. Faults apply to what leaves the namespace (the dependency's answers, its SYN-ACKs).
Everything here needs root; ``unavailable()`` says why it cannot run, for a clear skip.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
QUEUE = 0  # the NFQUEUE number; queues are per namespace, so one per experiment cannot collide


def unavailable() -> str | None:
    """Why network experiments cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "tc", "iptables") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages iproute2, iptables)"
    return None


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass
class Netns:
    name: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str
    impairer_pid: int | None = None
    injected_with: str | None = None

    @classmethod
    def fresh(cls) -> Netns:
        # A random private /30 and names: parallel runs (or a leftover of a killed run) do not clash.
        tag = f"{random.randrange(16**5):05x}"
        third, fourth = random.randrange(256), random.randrange(0, 256, 4)
        net = f"10.{random.randrange(200, 250)}.{third}"
        return cls(f"egchaos-{tag}", f"egc{tag}h", f"egc{tag}n", f"{net}.{fourth + 1}", f"{net}.{fourth + 2}")

    def create(self) -> None:
        try:
            run("ip", "netns", "add", self.name)
            run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            run("ip", "link", "set", self.ns_if, "netns", self.name)
            run("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            run("ip", "link", "set", self.host_if, "up")
            run("ip", "-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
            run("ip", "-n", self.name, "link", "set", self.ns_if, "up")
            run("ip", "-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def spawn(self, argv: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
        """A process inside the namespace (its own session: the launcher's Ctrl-C stays ours)."""
        out = log.open("ab") if log else subprocess.DEVNULL
        return subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv], stdout=out, stderr=out, start_new_session=True
        )

    def delete(self) -> None:
        """Stops every process in the namespace, then removes it and the host's end of the link;
        safe to call twice and after a partial create."""
        self.heal()
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        for pid in map(int, pids.split()):
            _signal(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)

    def exists(self) -> bool:
        return self.name in run("ip", "netns", "list").split()

    def impair(self, delay_ms: float = 0, jitter_ms: float = 0, loss_pct: float = 0) -> dict[str, Any]:
        self.heal()
        netem = ["delay", f"{delay_ms}ms", f"{jitter_ms}ms"] if delay_ms else []
        netem += ["loss", f"{loss_pct}%"] if loss_pct else []
        tc = ["ip", "netns", "exec", self.name, "tc", "qdisc", "replace", "dev", self.ns_if, "root", "netem"]
        done = subprocess.run([*tc, *netem], capture_output=True, text=True)
        if done.returncode == 0:
            self.injected_with = "tc netem"
        elif "unknown" in done.stderr.lower():  # "Specified qdisc kind is unknown": no sch_netem
            self._impair_in_user_space(delay_ms, jitter_ms, loss_pct)
        else:
            raise RuntimeError(f"tc netem {' '.join(netem)} on {self.ns_if}: {done.stderr.strip()}")
        return {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss_pct": loss_pct, **self.describe()}

    def _impair_in_user_space(self, delay_ms: float, jitter_ms: float, loss_pct: float) -> None:
        argv = [sys.executable, "-m", "kit.chaos.impair", "--queue", str(QUEUE), "--delay-ms", str(delay_ms),
                "--jitter-ms", str(jitter_ms), "--loss", str(loss_pct)]  # fmt: skip
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"impairing":  # bound to its queue before the rule sends to it
            proc.kill()
            raise RuntimeError(f"kit.chaos.impair did not start in {self.name} (exit {proc.wait(5)})")
        self.impairer_pid = proc.pid
        # --queue-bypass: should the impairer die, packets pass instead of being dropped for good.
        run("ip", "netns", "exec", self.name, "iptables", "-A", "OUTPUT", "-o", self.ns_if,
            "-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass")  # fmt: skip
        self.injected_with = "iptables NFQUEUE + kit.chaos.impair (kernel without sch_netem)"

    def partition(self) -> dict[str, Any]:
        run("ip", "link", "set", self.host_if, "down")
        self.injected_with = "ip link set down"
        return self.describe()

    def heal(self) -> dict[str, Any]:
        """Removes any fault: the qdisc, the NFQUEUE rule and its impairer, a downed link."""
        ns = ["ip", "netns", "exec", self.name]
        subprocess.run([*ns, "tc", "qdisc", "del", "dev", self.ns_if, "root"], capture_output=True)
        subprocess.run([*ns, "iptables", "-F", "OUTPUT"], capture_output=True)
        if self.impairer_pid:
            _signal(self.impairer_pid, signal.SIGTERM)
            _wait_gone(self.impairer_pid)
            self.impairer_pid = None
        subprocess.run(["ip", "link", "set", self.host_if, "up"], capture_output=True)
        self.injected_with = None
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, within: float = 5) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:  # our child: reap it
                return
        except ChildProcessError:  # started by another process (the actions run in-process)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    _signal(pid, signal.SIGKILL)
