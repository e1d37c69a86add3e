"""P1 postmortems in Jira: filed through the jira client against a loopback Jira stub that checks
requests against Jira's REST v2 create-issue shape; closing waits for the issue to be done."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from errorgate.config import JiraConfig
from errorgate.incidents.postmortem import Postmortems
from tests.support.incidents import EngineServer, alert, alertmanager_payload

# Jira REST API v2 "Create issue" (POST /rest/api/2/issue) request body, IssueUpdateDetails,
# restricted to what errorgate sends; field shapes as in Jira's REST reference: project and
# issuetype by key/name or id, summary up to 255 characters, v2 plain-text description, labels
# without spaces.
CREATE_ISSUE = {
    "type": "object",
    "required": ["fields"],
    "properties": {
        "fields": {
            "type": "object",
            "required": ["project", "issuetype", "summary"],
            "properties": {
                "project": {"type": "object", "anyOf": [{"required": ["key"]}, {"required": ["id"]}]},
                "issuetype": {"type": "object", "anyOf": [{"required": ["name"]}, {"required": ["id"]}]},
                "summary": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string", "pattern": r"^\S+$"}},
            },
        },
        "update": {"type": "object"},
        "properties": {"type": "array"},
    },
    "additionalProperties": False,
}


class JiraStub:
    def __init__(self) -> None:
        self.issues: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.auth: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                stub.auth.append(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/rest/api/2/issue":
                    return self._send(404, {"errorMessages": ["no such resource"]})
                try:
                    jsonschema.validate(body, CREATE_ISSUE)
                except jsonschema.ValidationError as e:
                    return self._send(400, {"errorMessages": [e.message], "errors": {}})
                key = f"OPS-{len(stub.issues) + 1}"
                stub.created.append(body)
                stub.issues[key] = {"name": "To Do", "category": "new"}
                self._send(201, {"id": "1000", "key": key, "self": f"{stub.url}/rest/api/2/issue/1000"})

            def do_GET(self) -> None:
                key = self.path.split("?")[0].rsplit("/", 1)[-1]
                if key not in stub.issues:
                    return self._send(404, {"errorMessages": ["Issue does not exist"]})
                s = stub.issues[key]
                self._send(200, {"id": "1000", "key": key, "self": f"{stub.url}/rest/api/2/issue/1000",
                                 "fields": {"status": {"name": s["name"], "statusCategory": {"key": s["category"]}}}})  # fmt: skip

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[EngineServer, JiraStub, Postmortems]]:
    stub = JiraStub()
    monkeypatch.setenv("JIRA_TOKEN", "jira-pat")
    srv = EngineServer(f"sqlite:///{tmp_path / 'i.db'}")
    cfg = JiraConfig(url=stub.url, project="OPS", token_env="JIRA_TOKEN", poll_interval=30)
    yield srv, stub, Postmortems(srv.engine, cfg)
    srv.stop()
    stub.httpd.shutdown()


def test_p1_files_a_blameless_postmortem_and_close_waits_for_it(
    world: tuple[EngineServer, JiraStub, Postmortems],
) -> None:
    srv, stub, pm = world
    srv.post_alerts(alertmanager_payload(alert(first_error="2025-06-15T13:58:00Z")))
    srv.post_alerts(alertmanager_payload(alert("frontend", "P3", fingerprint="p3"), group_key="other"))
    pm.tick()
    assert len(stub.created) == 1 and stub.auth == ["Bearer jira-pat"]
    fields = stub.created[0]["fields"]
    assert fields["project"] == {"key": "OPS"} and "ErrorgateErrorRateHigh on checkout" in fields["summary"]
    for heading in ("Contributing factors", "What the system allowed", "What went well", "Action items"):
        assert heading in fields["description"]
    assert "2025-06-15T13:58:00.000Z" in fields["description"] and "opened" in fields["description"]
    p1 = next(i for i in srv.incidents() if i["severity"] == "P1")
    assert p1["postmortem"] == {"key": "OPS-1", "status": "To Do", "done": False}

    srv.action(p1["id"], "resolve")
    refused = srv.action(p1["id"], "close")
    assert refused.status == 409 and "postmortem OPS-1 is not done" in refused.body["error"]
    stub.issues["OPS-1"] = {"name": "Done", "category": "done"}
    pm.tick()  # within poll_interval: not asked yet
    assert srv.action(p1["id"], "close").status == 409
    srv.clock.now += 31
    pm.tick()
    assert srv.action(p1["id"], "close").body["status"] == "closed"
    p3 = next(i for i in srv.incidents() if i["severity"] == "P3")
    assert p3["postmortem"] is None
