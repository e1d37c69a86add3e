"""Automatic rollback: each action's request checked against its vendor's documented shape by a
loopback capture server, fired once per bad deploy however often the verdict is evaluated;
dry run fires nothing; the cooldown holds; malformed settings name their key."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from errorgate.config import ConfigError, load_config
from errorgate.ha.ledger import LocalLedger
from errorgate.processors.deploys.rollback import RollbackTrigger
from errorgate.processors.deploys.settings import DeploysConfig, RollbackConfig
from errorgate.processors.deploys.store import VersionStore

T0 = 1_700_000_000.0
SECRET = "s3cr3t-token-value"


class Capture:
    """Records every request; answers as the vendors do (GitHub 204, GitLab 201, others 200)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                capture.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": json.loads(raw or b"null"),
                    }
                )
                status = 204 if "/dispatches" in self.path else 201 if "/trigger/" in self.path else 200
                data = b"" if status == 204 else b'{"id": 1}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PATCH = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_path(self, fragment: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if fragment in r["path"]]


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    for env in ("GITHUB_TOKEN", "GITLAB_TRIGGER_TOKEN", "GRAFANA_TOKEN", "HOOK_TOKEN", "KUBE_TOKEN"):
        monkeypatch.setenv(env, SECRET)
    c = Capture()
    yield c
    c.server.shutdown()


def rollback_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "check_interval": "10s",
        "cooldown": "30m",
        "actions": [
            {"kind": "webhook", "url": f"{url}/hooks/rollback", "token_env": "HOOK_TOKEN"},
            {
                "kind": "github",
                "api_url": url,
                "repository": "acme/checkout",
                "workflow": "rollback.yml",
                "ref": "main",
            },
            {"kind": "gitlab", "api_url": f"{url}/api/v4", "project": "acme/checkout", "ref": "main"},
            {"kind": "argo_rollouts", "api_url": url, "namespace": "shop", "token_env": "KUBE_TOKEN"},
        ],
        "grafana": {"url": url, "dashboard_uid": "errorgate-overview", "tags": ["errorgate", "rollback"]},
        **extra,
    }


def bad_deploy(
    store: VersionStore, service: str = "checkout", good: str = "1.0", bad: str = "2.0", at: float = T0
) -> None:
    for i in range(10):
        store.record_requests(service, good, at + i, 100, 1)
    for i in range(10):
        store.record_requests(service, bad, at + 100 + i, 100, 10)


class Audit:
    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []

    def __call__(self, record: Mapping[str, Any]) -> None:
        self.records.append(record)


def trigger_for(
    cfg: dict[str, Any], clock: list[float] | None = None
) -> tuple[RollbackTrigger, Audit, DeploysConfig]:
    deploys = DeploysConfig(rollback=RollbackConfig(**cfg))
    audit = Audit()
    ledger = LocalLedger(clock=(lambda: clock[0]) if clock else lambda: 0.0)
    return RollbackTrigger(deploys.rollback, ledger, audit, wall=lambda: T0 + 200), audit, deploys


def evaluate(trigger: RollbackTrigger, store: VersionStore, deploys: DeploysConfig, times: int = 1) -> int:
    fired = 0
    for _ in range(times):
        for verdict in trigger.failing(store, deploys.verdict):
            fired += trigger.consider(verdict) is not None
    return fired


def test_each_action_matches_its_vendor_request_shape_and_fires_once(capture: Capture) -> None:
    trigger, audit, deploys = trigger_for(rollback_config(capture.url))
    store = VersionStore(deploys)
    bad_deploy(store)
    assert evaluate(trigger, store, deploys, times=5) == 1
    assert len(capture.requests) == 5  # four actions and one annotation, once

    # GitHub REST "Create a workflow dispatch event": 204, ref + inputs (≤ 10, strings).
    (gh,) = capture.by_path("/dispatches")
    assert gh["method"] == "POST"
    assert gh["path"] == "/repos/acme/checkout/actions/workflows/rollback.yml/dispatches"
    assert gh["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert gh["headers"]["Accept"] == "application/vnd.github+json"
    assert gh["headers"]["X-GitHub-Api-Version"] == "2022-11-28"
    assert gh["body"] == {
        "ref": "main",
        "inputs": {"service": "checkout", "version": "1.0", "bad_version": "2.0"},
    }

    # GitLab "Trigger a pipeline with a token": project id URL-encoded, token + ref + variables.
    (gl,) = capture.by_path("/trigger/pipeline")
    assert gl["method"] == "POST" and gl["path"] == "/api/v4/projects/acme%2Fcheckout/trigger/pipeline"
    assert gl["headers"]["Content-Type"] == "application/json" and "Authorization" not in gl["headers"]
    assert gl["body"] == {
        "token": SECRET,
        "ref": "main",
        "variables": {"ROLLBACK_SERVICE": "checkout", "ROLLBACK_TO": "1.0", "ROLLBACK_FROM": "2.0"},
    }

    # Argo Rollouts abort: merge PATCH of the Rollout's status subresource.
    (argo,) = capture.by_path("/rollouts/")
    assert argo["method"] == "PATCH"
    assert argo["path"] == "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout/status"
    assert argo["headers"]["Content-Type"] == "application/merge-patch+json"
    assert argo["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert argo["body"] == {"status": {"abort": True}}

    # Grafana "Create annotation": epoch milliseconds, dashboardUID, tags, text.
    (note,) = capture.by_path("/api/annotations")
    assert note["method"] == "POST" and note["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert note["body"]["time"] == int((T0 + 200) * 1000)
    assert note["body"]["dashboardUID"] == "errorgate-overview"
    assert note["body"]["tags"] == ["errorgate", "rollback"]
    assert "checkout" in note["body"]["text"] and "2.0" in note["body"]["text"]

    (hook,) = capture.by_path("/hooks/rollback")
    assert hook["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert hook["body"]["event"] == "errorgate.rollback"
    assert {k: hook["body"][k] for k in ("service", "candidate", "baseline", "verdict")} == {
        "service": "checkout",
        "candidate": "2.0",
        "baseline": "1.0",
        "verdict": "fail",
    }
    assert hook["body"]["reasons"]

    # Audited once, every call's outcome, and no token anywhere in the record.
    (record,) = audit.records
    assert record["event"] == "rollback" and all(c["ok"] for c in record["calls"])
    assert SECRET not in json.dumps(record) and SECRET not in json.dumps(trigger.reports)


def test_equal_versions_fire_nothing(capture: Capture) -> None:
    trigger, audit, deploys = trigger_for(rollback_config(capture.url))
    store = VersionStore(deploys)
    for v, at in (("1.0", T0), ("2.0", T0 + 100)):
        for i in range(10):
            store.record_requests("checkout", v, at + i, 100, 1)
    assert evaluate(trigger, store, deploys, times=3) == 0 and capture.requests == [] and audit.records == []


def test_dry_run_fires_nothing_and_reports_what_it_would_do(capture: Capture) -> None:
    trigger, audit, deploys = trigger_for(rollback_config(capture.url, dry_run=True))
    store = VersionStore(deploys)
    bad_deploy(store)
    assert evaluate(trigger, store, deploys, times=3) == 1
    assert capture.requests == []
    (report,) = trigger.reports
    assert report["event"] == "rollback_dry_run"
    assert [c["method"] for c in report["calls"]] == ["POST", "POST", "POST", "PATCH"]
    assert report["calls"][2]["body"]["token"] == "<redacted>"
    assert audit.records[0]["event"] == "rollback_dry_run"
    assert SECRET not in json.dumps(trigger.reports)


def test_cooldown_holds_a_second_bad_deploy_of_the_service(capture: Capture) -> None:
    clock = [0.0]
    trigger, _, deploys = trigger_for(rollback_config(capture.url, grafana=None), clock)
    store = VersionStore(deploys)
    bad_deploy(store)
    assert evaluate(trigger, store, deploys) == 1
    bad_deploy(store, good="2.0", bad="3.0", at=T0 + 200)  # 3.0 fails against 2.0 as well
    clock[0] = 1799.0
    assert evaluate(trigger, store, deploys, times=2) == 0
    assert len(capture.requests) == 4
    clock[0] = 1801.0
    assert evaluate(trigger, store, deploys) == 1
    assert len(capture.requests) == 8
    assert capture.by_path("/dispatches")[-1]["body"]["inputs"]["bad_version"] == "3.0"


BASE = (Path(__file__).resolve().parent.parent / "errorgate" / "default_config.yaml").read_text()


def _load(tmp_path: Path, rollback: dict[str, Any]) -> None:
    import yaml

    cfg = yaml.safe_load(BASE)
    cfg.setdefault("processors", {}).setdefault("classify", {}).setdefault("deploys", {})["rollback"] = (
        rollback
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    load_config(path)


@pytest.mark.parametrize(
    ("rollback", "key"),
    [
        (
            {"enabled": True, "actions": [{"kind": "webhook", "url": "not a url"}]},
            "rollback.actions.0.webhook.url",
        ),
        ({"actions": [{"kind": "webhook"}]}, "rollback.actions.0.webhook.url"),
        ({"actions": [{"kind": "webhook", "url": "http://h/{sha}"}]}, "rollback.actions.0.webhook.url"),
        (
            {"actions": [{"kind": "github", "workflow": "r.yml", "ref": "main"}]},
            "rollback.actions.0.github.repository",
        ),
        ({"actions": [{"kind": "pagerduty"}]}, "rollback.actions.0"),
        ({"enabled": True}, "rollback"),
        ({"grafana": {"url": "grafana:3000"}}, "rollback.grafana.url"),
    ],
)
def test_malformed_rollback_config_names_the_key(tmp_path: Path, rollback: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, rollback)
    assert f"processors.classify.deploys.{key}" in str(e.value), str(e.value)


def test_ha_section_needs_endpoints(tmp_path: Path) -> None:
    import yaml

    for ha, key in (
        ({"etcd": {}}, "ha.etcd.endpoints"),
        ({"lease_ttl": 3}, "ha.etcd"),
        ({"etcd": {"endpoints": ["etcd:2379"]}}, "ha.etcd.endpoints"),
    ):
        cfg = {**yaml.safe_load(BASE), "ha": ha}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(path)
    logging.getLogger(__name__).debug("ok")


def test_classify_polls_the_trigger_and_audits_through_the_extension_hook(
    capture: Capture, tmp_path: Path
) -> None:
    import time

    from errorgate.component import ComponentContext, Extension, Extensions
    from errorgate.processors.classify import Classify, ClassifyConfig
    from errorgate.telemetry import Telemetry

    class Recorder(Extension):  # stands for the keyring extension's signed audit log
        def __init__(self) -> None:
            self.records: list[Mapping[str, Any]] = []

        def audit(self, record: Mapping[str, Any]) -> None:
            self.records.append(record)

    recorder = Recorder()
    config = ClassifyConfig(deploys={"rollback": rollback_config(capture.url)})
    context = ComponentContext(
        "classify", tmp_path, Telemetry(), logging.getLogger("t"), extensions=Extensions({"r": recorder})
    )
    processor = Classify(config, context)
    processor.start()
    try:
        bad_deploy(processor.deploys)
        for second in range(0, 60, 2):  # polled every 2 s; judged every check_interval (10 s)
            processor.poll(1000.0 + second)
        deadline = time.monotonic() + 10
        while len(capture.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        processor.shutdown()
    assert len(capture.requests) == 5
    assert [r["event"] for r in recorder.records] == ["rollback"]
