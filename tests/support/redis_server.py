"""A real Redis (Debian's ``redis-server``) for tests, on a free loopback port with its own
directory, stopped after; ``stop()`` / ``start()`` in between kill and bring it back on the
same port (the shared-state failure tests).

    with start_redis(tmp_path) as server:
        client = server.client()
        url = server.url  # redis://127.0.0.1:PORT/0

A test module of the shared-state suite takes its fixtures from ``redis_fixtures`` and builds
the extension and processors with ``state_extension`` / ``state_processor``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.prometheus import free_port

if TYPE_CHECKING:
    from errorgate.component import Processor
    from errorgate.extensions.shared_state import RedisStateExtension
    from errorgate.telemetry import Telemetry

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 (kept open by the server)
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except Exception:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start: {(self.workdir / 'redis.log').read_text()[-500:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def commands(self) -> dict[str, int]:
        """Calls per command since the last ``CONFIG RESETSTAT`` (``INFO commandstats``)."""
        stats = self.client().info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@contextmanager
def start_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server not installed (Debian package redis-server)")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fresh(server: RedisServer) -> RedisServer:
    """The module's server, running (a test may have stopped it) and empty, stats reset."""
    if server.process is None:
        server.start()
    server.client().flushall()
    server.client().config_resetstat()
    return server


def redis_fixtures(
    name: str,
) -> tuple[Callable[..., Iterator[RedisServer]], Callable[..., RedisServer]]:
    """A module's ``redis_server`` (one redis-server for all its tests, started once) and
    ``server`` (that one, running and emptied for each test), to assign at module level:

        redis_server, server = redis_fixtures("shared-late")

    ``name`` names the server's temporary directory."""

    @pytest.fixture(scope="module")
    def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        with start_redis(tmp_path_factory.mktemp(name)) as server:
            yield server

    @pytest.fixture
    def server(redis_server: RedisServer) -> RedisServer:
        return fresh(redis_server)

    return redis_server, server


def state_extension(
    server: RedisServer, telemetry: Telemetry | None = None, **settings: Any
) -> RedisStateExtension:
    """The ``redis`` shared-state extension pointed at ``server``."""
    import logging

    from errorgate.component import ComponentContext
    from errorgate.extensions.shared_state import RedisConfig, RedisStateExtension
    from errorgate.telemetry import Telemetry

    config = RedisConfig.model_validate({"endpoint": server.url, **settings})
    context = ComponentContext("redis", Path("."), telemetry or Telemetry(), logging.getLogger("test"))
    return RedisStateExtension(config, context)


def state_processor(
    kind: str,
    tmp_path: Path,
    ext: RedisStateExtension | None,
    telemetry: Telemetry | None = None,
    **settings: Any,
) -> Processor:
    """A ``kind`` processor (``classify``, ``sample``) keeping its state in ``ext``, or locally
    when ``ext`` is None: one replica of the gateway."""
    import logging

    from errorgate.component import PROCESSORS, ComponentContext, Extensions
    from errorgate.telemetry import Telemetry

    factory = PROCESSORS.get(kind)
    assert factory is not None
    context = ComponentContext(
        kind,
        tmp_path,
        telemetry or Telemetry(),
        logging.getLogger("test"),
        Extensions({"redis": ext} if ext is not None else {}),
    )
    return factory.create(factory.config_model.model_validate(settings), context)
