"""The errorgate OpenTelemetry Collector distribution (``make collector``) for tests: find or
build the binary once per machine, and run it as a child process on loopback ports.

The binary lives in the git-ignored cache (``.cache/otelcol/otelcol-errorgate``, or where
``ERRORGATE_OTELCOL`` points, as ``make`` exports it). Tests that need it call ``otelcol_binary()``,
which builds with ``make collector`` when it is missing; only a machine without Go skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = ROOT / ".cache" / "otelcol" / "otelcol-errorgate"

_checked: Path | None = None


def otelcol_binary() -> Path:
    """The Collector binary, built by ``make collector`` on first use; skips only without Go."""
    global _checked
    if _checked is not None:
        return _checked
    binary = Path(os.environ.get("ERRORGATE_OTELCOL") or DEFAULT_BINARY)
    if not os.access(binary, os.X_OK):
        if shutil.which("go") is None:
            pytest.skip("Go is not installed: the Collector distribution (make collector) cannot be built")
        # A cold build takes tens of minutes on 2 cores; `make test` builds it before pytest starts.
        result = subprocess.run(["make", "collector"], cwd=ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not os.access(binary, os.X_OK):
            raise RuntimeError(f"make collector failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    _checked = binary
    return binary


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(otelcol_binary()), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


class CollectorProcess:
    """``otelcol-errorgate --config FILE`` as a child process; ready when its health_check
    extension answers 200 (every config run here enables it on ``health_port``)."""

    def __init__(
        self,
        config_text: str,
        workdir: Path,
        health_port: int,
        name: str = "otelcol",
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.config_path = workdir / f"{name}.yaml"
        # e.g. HostsFile.command_prefix(): runs the Collector with a private /etc/hosts
        self.command_prefix = list(command_prefix)
        self.config_path.write_text(config_text)
        self.log_path = workdir / f"{name}.log"
        self.health_port = health_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> CollectorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command_prefix, str(otelcol_binary()), "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            cwd=self.config_path.parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"collector did not become healthy:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: the Collector drains its pipelines (queues flush) before it exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
