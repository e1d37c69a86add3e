"""A real Prometheus (``/usr/bin/prometheus``) for tests, on a free loopback port.

    with start_prometheus(tmp_path, targets=["127.0.0.1:9464"], target_labels={"env": "test"}) as prom:
        prom.wait_for_targets_up()
        prom.wait_until('errorgate_received_items_total > 0')
        rows = prom.query('sum by (service) (rate(errorgate_errors_total[1m]))')

Also usable for rule tests: ``rule_files=[...]`` and ``alertmanagers=["127.0.0.1:9093"]``;
``rules()`` and ``alerts()`` return the API's view. Scrape and evaluation interval default to 1s.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class PromQLError(AssertionError):
    """Prometheus rejected a query (bad syntax, bad types); the message quotes the expression."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, process: subprocess.Popen[bytes], url: str, workdir: Path, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.workdir = workdir
        self.log_path = log_path

    # -------------------------------------------------------------- HTTP API

    def _get(self, path: str, params: Mapping[str, str] | None = None, timeout: float = 10) -> Any:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=timeout) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        if body.get("status") != "success":
            raise PromQLError(f"{path} {dict(params or {})}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the result list (``[{"metric": {...}, "value": [t, "v"]}, ...]``).

        Scalars and strings come back as one row with an empty metric."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        return list(self._get("/api/v1/query_range", params)["result"])

    def values(self, expr: str, by: str) -> dict[str, float]:
        """Instant query as ``{series[by]: value}``, e.g. ``values('sum by (service) (x)', 'service')``."""
        return {row["metric"].get(by, ""): float(row["value"][1]) for row in self.query(expr)}

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        params = {"match[]": match} if match else None
        return list(self._get(f"/api/v1/label/{label}/values", params))

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])

    # -------------------------------------------------------------- waiting

    def wait_until(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; returns that result or fails the test."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self._check_alive()
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {expr!r}; last result: {result}")

    def wait_for_targets_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self._check_alive()
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return
            time.sleep(0.2)
        states = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
        raise AssertionError(f"scrape targets not up after {timeout}s: {states}")

    def wait_for_scrapes(self, n: int = 2) -> None:
        """Wait until every target has been scraped ``n`` more times (so fresh values are stored)."""
        start = {t["scrapeUrl"]: t["lastScrape"] for t in self.targets()}
        for _ in range(n):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = {t["scrapeUrl"]: t["lastScrape"] for t in self.targets()}
                if all(now.get(url) != last for url, last in start.items()):
                    start = now
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("targets were not scraped again within 30s")

    def reload(self) -> None:
        """Re-read the config and rule files (``--web.enable-lifecycle`` is on)."""
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        urllib.request.urlopen(req, timeout=10).close()

    # -------------------------------------------------------------- lifecycle

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(
    path: Path,
    targets: Sequence[str],
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    rule_files: Sequence[str | Path] = (),
    target_labels: Mapping[str, str] | None = None,
    alertmanagers: Sequence[str] = (),
    job: str = "errorgate",
) -> None:
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": list(targets), "labels": dict(target_labels or {})}],
            }
        ],
    }
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def start_prometheus(
    workdir: Path,
    targets: Sequence[str] = (),
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    rule_files: Sequence[str | Path] = (),
    target_labels: Mapping[str, str] | None = None,
    alertmanagers: Sequence[str] = (),
    job: str = "errorgate",
    extra_args: Sequence[str] = (),
) -> Prometheus:
    """Start Prometheus with its config, data and log under ``workdir``; returns once it is ready."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (make system-deps installs Debian's package)")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    write_config(
        config_path,
        targets,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
        rule_files=rule_files,
        target_labels=target_labels,
        alertmanagers=alertmanagers,
        job=job,
    )
    log_path = workdir / "prometheus.log"
    last_error = ""
    # The free port can be taken between probing and binding; a couple of retries make that harmless.
    for _ in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                    *extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        prom = Prometheus(process, url, workdir, log_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return prom
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        last_error = prom.log_tail()
        prom.stop()
    raise RuntimeError(f"prometheus did not become ready:\n{last_error}")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    """``prometheus_factory(targets, **kwargs)`` starts one (or more) Prometheus, stopped at teardown."""
    started: list[Prometheus] = []

    def factory(targets: Sequence[str] = (), **kwargs: Any) -> Prometheus:
        prom = start_prometheus(tmp_path / f"prometheus-{len(started)}", targets, **kwargs)
        started.append(prom)
        return prom

    yield factory
    for prom in started:
        prom.stop()


def substitute_grafana(
    expr: str,
    variables: Mapping[str, str | Sequence[str]] | None = None,
    *,
    rate_interval: str = "1m",
    interval: str = "15s",
    range_: str = "5m",
) -> str:
    """Replace Grafana's macros and template variables as Grafana does for a Prometheus data source.

    A list value becomes ``(a|b)`` with regex metacharacters escaped (Grafana's multi-value
    format); a string is inserted verbatim (use ``".*"`` for an "All" with that all-value)."""
    import re

    out = expr.replace("$__rate_interval", rate_interval).replace("$__interval", interval)
    out = out.replace("$__range", range_)
    for name, value in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        if isinstance(value, str):
            text = value
        else:
            escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in value]
            text = escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        out = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", lambda _m, t=text: t, out)
    leftover = re.search(r"\$\{?\w+", out)
    if leftover:
        raise ValueError(f"unsubstituted variable {leftover.group(0)} in {expr!r}")
    return out
