"""Process helpers shared by ``make bench`` and its soak: free ports, waiting for a listener,
and the memory and CPU of a process tree read from /proc."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them (each thread's
    ``children`` file lists only its own)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue  # the thread ended meanwhile
    return out


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants, parents before their children."""
    out = [pid]
    for child in children(pid):
        out.extend(tree_pids(child))
    return out


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children (redaction worker processes count too)."""
    return rss_mib(pid) + sum(tree_rss_mib(c) for c in children(pid))


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live children."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")
    return total + sum(tree_cpu_s(c) for c in children(pid))


def log_tail(path: Path, chars: int = 2000) -> str:
    """The end of a process's log file (all of it with ``chars`` 0); empty if there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:] if chars else text
