"""A real PostgreSQL (Debian's ``postgresql-15``) for tests: ``initdb`` into a temporary
directory, the server on a free loopback port with its unix socket in that directory, trust
authentication for the cluster's own superuser, stopped after. ``stop()`` / ``start()`` in
between take it down and bring it back on the same port and data (the store-down tests).

PostgreSQL refuses to run as root, and the tests run as root: the server runs as ``nobody``
(``setpriv``) in a directory that user owns, outside pytest's root-only ``tmp_path``.

    with start_postgres() as pg:
        url = pg.url  # postgresql+psycopg://errorgate@127.0.0.1:PORT/incidents
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.prometheus import free_port


def _pg_bin() -> Path:
    """Debian keeps the server off PATH, under its major version: the newest one installed."""
    if os.environ.get("ERRORGATE_PG_BIN"):
        return Path(os.environ["ERRORGATE_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    return found[0] if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
USER = "errorgate"
DATABASE = "incidents"
# Debian's python3-psycopg (pure Python over libpq5): used only when the venv has no psycopg yet,
# so the test runs on a machine whose venv predates the `postgres` extra.
DEBIAN_PSYCOPG = Path("/usr/lib/python3/dist-packages/psycopg")


def _driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if not DEBIAN_PSYCOPG.is_dir():
            pytest.skip("PostgreSQL driver missing: pip install 'errorgate[postgres]' (psycopg)")
        # Only psycopg is exposed (a folder with one link), not the whole of dist-packages.
        shim = Path(tempfile.mkdtemp(prefix="errorgate-psycopg-"))
        (shim / "psycopg").symlink_to(DEBIAN_PSYCOPG)
        sys.path.append(str(shim))
        atexit.register(shutil.rmtree, shim, True)


def _as_nobody(argv: list[str]) -> list[str]:
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv]


class PostgresServer:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{DATABASE}"
        self.process: subprocess.Popen[bytes] | None = None

    def init(self) -> None:
        subprocess.run(
            _as_nobody([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 (kept open by the server)
        self.process = subprocess.Popen(
            _as_nobody([str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                        "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                        "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start: {(self.root / 'postgres.log').read_text()[-800:]}")

    def create_database(self) -> None:
        subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: clients are cut off at once, data is kept.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    if not (PG_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL server not installed ({PG_BIN}/postgres; Debian package postgresql)")
    _driver()
    root = Path(tempfile.mkdtemp(prefix="errorgate-pg-"))
    nobody = pwd.getpwnam("nobody")
    os.chown(root, nobody.pw_uid, nobody.pw_gid)
    server = PostgresServer(root, free_port())
    try:
        server.init()
        server.start()
        server.create_database()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
