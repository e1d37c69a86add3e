"""A real Alertmanager (Debian's ``prometheus-alertmanager``) on a free loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support.prometheus import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
MISSING = "Debian package prometheus-alertmanager not installed"


class Alertmanager:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.load(resp)

    def post_alerts(self, *alerts: dict[str, Any]) -> None:
        req = urllib.request.Request(f"{self.url}/api/v2/alerts", data=json.dumps(list(alerts)).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})  # fmt: skip
        urllib.request.urlopen(req, timeout=5).close()

    def silences(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v2/silences"))

    def alert_state(self, alertname: str) -> dict[str, Any]:
        [found] = [a for a in self.get("/api/v2/alerts") if a["labels"]["alertname"] == alertname]
        return dict(found["status"])


@contextmanager
def start_alertmanager(workdir: Path, config: dict[str, Any] | None = None) -> Iterator[Alertmanager]:
    assert ALERTMANAGER is not None, MISSING
    config = config or {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
    (workdir / "am.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "am.log").open("wb")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={workdir / 'am.yml'}", f"--storage.path={workdir / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((workdir / "am.log").read_text()) from None
                time.sleep(0.1)
        yield Alertmanager(url)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
