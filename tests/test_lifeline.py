"""errorgate.lifeline: each mechanism on its own, in real processes. The parent-death chain
(owner → its launcher thread → forkserver → child) ends the child with no code of its own
running; the watch ends a process whose guardian ended, even one that ended before it looked;
a forkserver started for a thread that then ends (as redact's pool start does) stays up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from errorgate import lifeline

ROOT = Path(__file__).resolve().parent.parent

_OWNER = """
import sys, threading, time
from errorgate import lifeline


def child(mode, guardians):
    if mode == "parent-death":
        assert lifeline.die_with_parent()  # the kernel alone: no watch thread
    else:
        lifeline.watch(guardians)  # the watch alone: no parent-death signal
    time.sleep(600)


if __name__ == "__main__":
    started = []

    def start():
        context = lifeline.forkserver_context()
        process = context.Process(target=child, args=(sys.argv[1], lifeline.guardians()))
        process.start()
        started.append(process.pid)

    # From a thread that ends at once, as redact's pool starts: nothing may end with it.
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    time.sleep(1.0)
    print(started[0], flush=True)
    time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if _running(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _running(pid)]
    return alive


@pytest.mark.skipif(sys.platform != "linux", reason="prctl and pidfd are Linux's")
@pytest.mark.parametrize("mode", ["parent-death", "watch"])
def test_forkserver_and_child_end_with_their_owner(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "owner.py"
    script.write_text(_OWNER)
    owner = subprocess.Popen([sys.executable, str(script), mode], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert owner.stdout is not None
        child = int(owner.stdout.readline())
        forkserver = _parent(child)
        pids = [child, forkserver]
        # The thread that asked for them has ended; that ended neither.
        assert _running(child), "the child ended with the thread that started it"
        assert forkserver != 1 and _parent(forkserver) == owner.pid, "the forkserver is gone"
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert _gone(pids, 5) == [], f"outlived their owner ({mode})"
    finally:
        owner.kill()
        owner.wait(10)
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_watch_ends_a_process_whose_guardian_is_already_gone() -> None:
    """A guardian may end before its child looks (while the child imports): it exits at once."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    code = (
        "import sys, time; from errorgate import lifeline; lifeline.bind([int(sys.argv[1])]); time.sleep(30)"
    )
    begin = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, str(gone.pid)], cwd=ROOT, timeout=30)
    assert result.returncode == 0 and time.monotonic() - begin < 10


def test_watch_polls_where_there_is_no_pidfd() -> None:
    """The fallback: asking every second whether each guardian is alive."""
    guardian = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    code = (
        "import sys, threading, time; from errorgate import lifeline\n"
        "threading.Thread(target=lifeline._exit_when_one_ends, args=([], [int(sys.argv[1])])).start()\n"
        "print('watching', flush=True); time.sleep(30)"
    )
    watcher = subprocess.Popen(
        [sys.executable, "-c", code, str(guardian.pid)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "watching"
        time.sleep(lifeline.POLL_SECONDS * 1.5)
        assert watcher.poll() is None  # the guardian is alive: so is the watcher
        guardian.kill()
        guardian.wait(10)  # reaped: a zombie still answers kill(pid, 0)
        assert watcher.wait(lifeline.POLL_SECONDS * 5) == 0
    finally:
        guardian.kill()
        watcher.kill()
        guardian.wait(10)
        watcher.wait(10)
