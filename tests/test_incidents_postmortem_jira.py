"""After the page (issue 17): the Jira webhook closes the loop at once, action items are linked
Jira issues counted in the reports, and a reviewer check flags blame wording and personal names.
Jira is the loopback stub that checks every request against Jira's published OpenAPI schema."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from errorgate.cli import main
from errorgate.commands.incidents import redact_person_spans
from errorgate.config import JiraConfig, default_config_text
from errorgate.incidents.jira_webhook import jira_webhook
from errorgate.incidents.postmortem import Postmortems
from errorgate.incidents.review import Reviewer
from tests.support.incidents import EngineServer, Reply, alert, alertmanager_payload, call
from tests.support.jira_stub import JiraStub

SECRET = "jira-webhook-s3cr3t"
NAME = "Maria Schneider"


@dataclass
class World:
    srv: EngineServer
    stub: JiraStub
    pm: Postmortems
    db: Path

    def p1(self) -> str:
        """A P1 whose postmortem is filed (OPS-1) and which is resolved."""
        self.srv.post_alerts(alertmanager_payload(alert(first_error="2025-06-15T13:58:00Z")))
        self.pm.tick()
        inc = self.srv.incidents()[0]
        assert inc["postmortem"]["key"] == "OPS-1"
        self.srv.action(inc["id"], "resolve")
        return str(inc["id"])

    def webhook(self, key: str, status: str = "Done", category: str = "done", sign: str | None = SECRET,
                query: str = "", body: bytes | None = None) -> Reply:  # fmt: skip
        if body is None:
            issue = self.stub.issue_json(key)
            issue["fields"]["status"].update(name=status)
            issue["fields"]["status"]["statusCategory"]["key"] = category
            doc = {"timestamp": 1750000000000, "webhookEvent": "jira:issue_updated", "issue_event_type_name": "issue_generic",
                   "issue": issue, "changelog": {"id": "1", "items": [{"field": "status", "toString": status}]}}  # fmt: skip
            body = json.dumps(doc).encode()
        headers = {}
        if sign:
            headers["X-Hub-Signature"] = "sha256=" + hmac.new(sign.encode(), body, hashlib.sha256).hexdigest()
        return call(
            "POST", f"{self.srv.url}/api/v1/webhooks/jira{query}", raw=body, token=None, headers=headers
        )

    def show(self, incident_id: str) -> dict:  # type: ignore[type-arg]
        return dict(call("GET", f"{self.srv.url}/api/v1/incidents/{incident_id}", token=None).body)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    stub = JiraStub()
    monkeypatch.setenv("JIRA_TOKEN", "jira-pat")
    db = tmp_path / "i.db"
    srv = EngineServer(f"sqlite:///{db}")
    cfg = JiraConfig(url=stub.url, project="OPS", token_env="JIRA_TOKEN", poll_interval=3600)
    pm = Postmortems(srv.engine, cfg, reviewer=Reviewer(redact_person_spans))
    pm.install(srv.api)
    jira_webhook(srv.api, SECRET, pm.apply_status)
    yield World(srv, stub, pm, db)
    pm.client.close()
    srv.stop()
    stub.stop()
    assert stub.rejected == []  # every request errorgate sent matched Jira's published schema


def test_the_jira_webhook_lets_a_p1_close_without_waiting_for_a_poll(world: World) -> None:
    incident = world.p1()
    assert world.srv.action(incident, "close").status == 409
    world.stub.set_status("OPS-1", "Done", "done")
    reply = world.webhook("OPS-1")
    assert reply.status == 200 and reply.body["matched"] is True
    # poll_interval is an hour and the clock has not moved: only the webhook can have said so
    assert world.srv.action(incident, "close").body["status"] == "closed"
    entry = [e for e in world.show(incident)["timeline"] if e["kind"] == "postmortem"][-1]
    assert entry["actor"] == "jira-webhook" and entry["message"] == "postmortem OPS-1 is Done"


def test_jira_data_center_sends_the_secret_in_the_url_and_it_never_reaches_the_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    incident = world.p1()
    with caplog.at_level(logging.DEBUG):
        assert world.webhook("OPS-1", sign=None, query=f"?token={SECRET}").status == 200
    assert world.srv.action(incident, "close").status == 200
    assert SECRET not in caplog.text


def test_the_jira_webhook_refuses_a_wrong_secret_and_names_what_is_malformed(world: World) -> None:
    incident = world.p1()
    before = world.show(incident)["timeline"]
    assert world.webhook("OPS-1", sign="not-the-secret").status == 401
    assert world.webhook("OPS-1", sign=None, query="?token=guess").status == 401
    assert world.webhook("OPS-1", sign=None).status == 401
    no_status = json.dumps(
        {"webhookEvent": "jira:issue_updated", "issue": {"key": "OPS-1", "fields": {}}}
    ).encode()
    reply = world.webhook("OPS-1", body=no_status)
    assert reply.status == 400 and reply.body["error"] == "issue.fields.status: missing"
    reply = world.webhook("OPS-1", body=b"[1, 2]")
    assert reply.status == 400 and reply.body["error"].startswith("body:")
    no_event = json.dumps({"issue": {"key": "OPS-1"}}).encode()
    assert world.webhook("OPS-1", body=no_event).body["error"] == "webhookEvent: missing"
    sprint = json.dumps({"webhookEvent": "sprint_started", "sprint": {"id": 1}}).encode()
    assert world.webhook("OPS-1", body=sprint).body == {"event": "sprint_started", "matched": False}
    assert world.show(incident)["timeline"] == before  # nothing stored
    assert world.srv.action(incident, "close").status == 409
    denied = [a for a in world.srv.engine.audit_trail() if a["action"] == "webhook:jira"]
    assert len(denied) == 3 and {a["outcome"] for a in denied} == {"denied"}


def _actions(world: World, incident: str, **body: str) -> Reply:
    return call("POST", f"{world.srv.url}/api/v1/incidents/{incident}/actions", body)


def test_action_items_are_linked_jira_issues_whose_state_shows_in_both_reports(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    incident = world.p1()
    bad = _actions(world, incident, team="pay ments", summary="x")
    assert bad.status == 400 and bad.body["error"].startswith("team:")
    assert (
        _actions(world, incident, team="payments", summary="x", due="tomorrow")
        .body["error"]
        .startswith("due:")
    )
    assert call("POST", f"{world.srv.url}/api/v1/incidents/{incident}/actions", {"team": "payments", "summary": "x"},
                token="wrong").status == 401  # fmt: skip
    late = _actions(
        world, incident, team="payments", summary="Add a timeout to the card gateway", due="2025-06-20"
    )
    assert late.status == 201 and late.body["status"] == "pending"
    _actions(world, incident, team="platform", summary="Alert on the queue depth", due="2099-01-01")
    world.pm.tick()

    created = {c["fields"]["summary"]: c["fields"] for c in world.stub.created[1:]}
    first = created[f"Action item (incident {incident}): Add a timeout to the card gateway"]
    assert first["duedate"] == "2025-06-20" and "team-payments" in first["labels"]
    assert [(link["type"]["name"], link["inwardIssue"]["key"], link["outwardIssue"]["key"]) for link in world.stub.links] == [
        ("Relates", "OPS-2", "OPS-1"), ("Relates", "OPS-3", "OPS-1")]  # fmt: skip
    world.stub.set_status("OPS-3", "Done", "done")
    assert world.webhook("OPS-3").body["matched"] is True
    items = call("GET", f"{world.srv.url}/api/v1/incidents/{incident}/actions", token=None).body[
        "action_items"
    ]
    assert [(i["key"], i["status"], i["done"]) for i in items] == [
        ("OPS-2", "To Do", False),
        ("OPS-3", "Done", True),
    ]

    config = tmp_path / "errorgate.yaml"
    config.write_text(default_config_text() + f"\nincidents:\n  store: sqlite:///{world.db}\n")
    assert main(["incidents", "report", "--since", "3650d", "--format", "json", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)["action_items"]
    assert (
        report["open"] == 1 and report["closed"] == 1 and report["overdue"] == 1
    )  # due 2025-06-20, not done
    assert report["by_team"] == {"payments": {"open": 1, "closed": 0, "overdue": 1},
                                 "platform": {"open": 0, "closed": 1, "overdue": 0}}  # fmt: skip
    assert main(["report", "retro", "--team", "payments", "--since", "3650d", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "open 1, closed 0, overdue 1" in text and "OPS-2 (To Do) OVERDUE" in text


def test_the_reviewer_check_flags_blame_and_names_by_position_never_echoing_the_name(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    world.srv.post_alerts(alertmanager_payload(alert()))
    incident = world.srv.incidents()[0]["id"]
    world.srv.action(incident, "note", text="rollback was late: human error during the deploy")
    world.pm.tick()
    assert "errorgate-review-flagged" in world.stub.created[0]["fields"]["labels"]
    review = [e for e in world.show(incident)["timeline"] if e["kind"] == "review"]
    assert len(review) == 1 and "1 finding(s): blame wording 'human error' at " in review[0]["message"]

    # the team writes the postmortem in Jira
    world.stub.issues["OPS-1"]["fields"]["description"] = (
        "h2. Contributing factors\nThe deploy tool allowed a rollout to all regions at once.\n"
        f"It was the fault of {NAME}, who was careless.\n"
    )
    with caplog.at_level(logging.DEBUG):
        reply = call("GET", f"{world.srv.url}/api/v1/incidents/{incident}/postmortem/check", token=None)
        assert reply.status == 200
        found = [(f["kind"], f["line"], f["column"], f["length"], f["term"]) for f in reply.body["findings"]]
        assert found == [
            ("blame", 3, 12, 8, "fault of"),
            ("person", 3, 21, len(NAME), None),
            ("blame", 3, 46, 8, "careless"),
        ]
        assert all(f["why"] for f in reply.body["findings"])
        code = main(["incidents", "postmortem", "check", incident, "--url", world.srv.url])
    out = capsys.readouterr().out
    assert code == 1 and "3:21 personal name" in out and "3:46 blame wording 'careless'" in out
    for text in (json.dumps(reply.body), out, caplog.text, json.dumps(world.show(incident))):
        assert "Schneider" not in text and "Maria" not in text

    world.stub.issues["OPS-1"]["fields"]["description"] = (
        "h2. Contributing factors\nThe deploy tool allowed it.\n"
    )
    assert main(["incidents", "postmortem", "check", incident, "--url", world.srv.url]) == 0


def test_the_engine_serves_the_webhook_only_with_its_secret_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from errorgate.cli import CommandError
    from errorgate.commands.incidents import EngineRole
    from errorgate.config import parse_config

    monkeypatch.setenv("JIRA_TOKEN", "jira-pat")
    monkeypatch.delenv("JIRA_HOOK", raising=False)
    text = default_config_text() + (
        f"\nincidents:\n  endpoint: 127.0.0.1:0\n  store: sqlite:///{tmp_path / 'i.db'}\n"
        "  jira: {url: http://127.0.0.1:9, project: OPS, token_env: JIRA_TOKEN, webhook_secret_env: JIRA_HOOK}\n"
    )
    with pytest.raises(
        CommandError, match=r"incidents\.jira\.webhook_secret_env: environment variable JIRA_HOOK"
    ):
        EngineRole(parse_config(text))
    monkeypatch.setenv("JIRA_HOOK", SECRET)
    role = EngineRole(parse_config(text))
    role.start()
    try:
        body = b'{"webhookEvent": "jira:issue_updated"}'
        assert call("POST", f"{role.url}/api/v1/webhooks/jira", raw=body, token=None).status == 401
        signed = {"X-Hub-Signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}
        reply = call("POST", f"{role.url}/api/v1/webhooks/jira", raw=body, token=None, headers=signed)
        assert reply.status == 400 and reply.body["error"] == "issue: missing"
    finally:
        role.stop()
