"""Processes that cannot outlive the gateway.

errorgate starts processes of its own: the processor worker, redact's detection pool workers,
and through multiprocessing a forkserver in each process that starts others (the gateway's and
the worker's) and a resource tracker. A gateway that ends without stopping them — SIGKILL, the
OOM killer, a supervisor's stop timeout running out in the middle of a clean shutdown — must not
leave them running: they hold spaCy models (hundreds of MB), ignore SIGTERM (the worker does, and
what it starts inherits that), and every restart would add another set.

Two mechanisms; each covers the moments the other could miss:

- Parent death (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``): the kernel kills a process when the
  *thread* that forked it ends. A forkserver sets it on itself through a preloaded module
  (``errorgate.lifeline.forkserver_preload``) and is started from a thread that lives as long
  as its process (``forkserver_context``), never from the thread that happens to ask for a
  worker (a pool starting in the background, a gRPC handler restarting the worker: threads that
  end). The processes a forkserver forks (the worker, pool workers) set it in ``bind``; their
  parent is the forkserver's only thread. So gateway → forkserver → worker → its forkserver →
  pool workers end link by link in the kernel, with no code to run in any of them, whatever
  they are doing (a busy thread holding the GIL included).
- A watch (``bind``): a thread waiting on a pidfd of every guardian — the gateway, and any
  owner in between — that exits the process when one of them ends, or at once if one has
  ended already. It covers a parent that died before the child asked for the signal (a child
  binds after its imports: seconds after its fork on a busy machine), a forkserver started
  before errorgate set its preload (by an embedding program), and systems without prctl;
  without pidfd it asks every second.

A forkserver whose starter died before the preloaded module ran has no client left and exits
at once (multiprocessing ends a forkserver when the last holder of its "alive" pipe — the
starter and the processes it forked — is gone). The resource tracker needs neither mechanism
for the same reason: it exits when the last process holding its pipe is gone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from multiprocessing.context import ForkServerContext

FORKSERVER_PRELOAD = ["__main__", "errorgate.lifeline.forkserver_preload"]  # __main__: the default
POLL_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_guardians: tuple[int, ...] = ()


def guardians() -> tuple[int, ...]:
    """What a process started from this one must not outlive: this process and its own guardians."""
    return (*_guardians, os.getpid())


def bind(pids: Sequence[int]) -> None:
    """First thing in a process errorgate started, with the starter's ``guardians()``: this
    process ends when the thread that forked it ends, and when any of ``pids`` ends."""
    global _guardians
    _guardians = tuple(pids)
    die_with_parent()
    watch(_guardians)


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when the thread that forked it ends. False where
    there is no prctl (not Linux, or refused): the watch in ``bind`` is then all there is."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0
    except (OSError, AttributeError):  # no libc to load, or a libc without prctl
        return False


def watch(pids: Sequence[int]) -> None:
    """Exit this process as soon as one of ``pids`` has ended. At once and without clean-up:
    what it would clean up (pipes, a pool) belonged to the process that is gone."""
    fds: list[int] = []
    polled: list[int] = []
    for pid in pids:
        if sys.platform != "linux":
            polled.append(pid)
            continue
        try:
            fds.append(os.pidfd_open(pid))  # readable once the process has ended (a zombie too)
        except ProcessLookupError:
            os._exit(0)  # ended already
        except OSError:  # no pidfd on this kernel (before 5.3), or not allowed: ask every second
            polled.append(pid)
    if fds or polled:
        threading.Thread(
            target=_exit_when_one_ends, args=(fds, polled), name="errorgate-lifeline-watch", daemon=True
        ).start()


def _exit_when_one_ends(fds: list[int], polled: list[int]) -> None:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    timeout_ms = int(POLL_SECONDS * 1000) if polled else None
    while not poller.poll(timeout_ms):
        if not all(_alive(pid) for pid in polled):
            break
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


class _Launcher:
    """A thread that lives as long as its process, to start forkservers from: a forkserver's
    parent-death signal fires when the thread that started it ends."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.jobs: queue.SimpleQueue[tuple[Callable[[], None], Future[None]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="errorgate-lifeline", daemon=True).start()

    def call(self, job: Callable[[], None]) -> None:
        done: Future[None] = Future()
        self.jobs.put((job, done))
        done.result()

    def _run(self) -> None:
        while True:
            job, done = self.jobs.get()
            try:
                job()
            except BaseException as e:  # the caller's to handle, as if it had run the job itself
                done.set_exception(e)
            else:
                done.set_result(None)


_launcher: _Launcher | None = None
_launcher_lock = threading.Lock()


def forkserver_context() -> ForkServerContext:
    """multiprocessing's forkserver context with the server running, started (if it was not)
    from this process's launcher thread and preloading the module that ties it to that thread.
    Call it before starting processes: if the server died meanwhile, multiprocessing would
    start it again from the calling thread, which may end long before this process does."""
    global _launcher
    with _launcher_lock:
        if _launcher is None or _launcher.pid != os.getpid():  # a forked child has no such thread
            _launcher = _Launcher()
        launcher = _launcher
    context = multiprocessing.get_context("forkserver")
    # Takes effect only for a server not running yet. It replaces a list an embedding program
    # may have set: a preload saves children their imports, they import what they need anyway.
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    launcher.call(multiprocessing.forkserver.ensure_running)
    return context
