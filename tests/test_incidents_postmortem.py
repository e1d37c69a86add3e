"""P1 postmortems in Jira: filed through the jira client against a loopback Jira stub that checks
requests against Jira's published OpenAPI schema; closing waits for the issue to be done."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from errorgate.config import JiraConfig
from errorgate.incidents.postmortem import Postmortems
from tests.support.incidents import EngineServer, alert, alertmanager_payload
from tests.support.jira_stub import JiraStub


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
    stub.stop()


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
    stub.set_status("OPS-1", "Done", "done")
    pm.tick()  # within poll_interval: not asked yet
    assert srv.action(p1["id"], "close").status == 409
    srv.clock.now += 31
    pm.tick()
    assert srv.action(p1["id"], "close").body["status"] == "closed"
    p3 = next(i for i in srv.incidents() if i["severity"] == "P3")
    assert p3["postmortem"] is None
    assert stub.rejected == []


def test_the_jira_stub_refuses_what_the_published_schema_forbids() -> None:
    """The checks are the spec's: a null comment on a link (what the jira client sends by
    default), a read-only property, a link to an issue that does not exist."""
    from tests.support.incidents import call

    stub = JiraStub()
    try:
        create = {"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Task"}, "summary": "s"}}
        assert call("POST", f"{stub.url}/rest/api/2/issue", create, token=None).status == 201
        no_summary = {"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Task"}}}
        assert call("POST", f"{stub.url}/rest/api/2/issue", no_summary, token=None).status == 400
        read_only = {**create, "transition": {"id": "31", "name": "Done"}}
        assert call("POST", f"{stub.url}/rest/api/2/issue", read_only, token=None).status == 400
        link = {
            "type": {"name": "Relates"},
            "inwardIssue": {"key": "OPS-1"},
            "outwardIssue": {"key": "OPS-1"},
        }
        assert (
            call("POST", f"{stub.url}/rest/api/2/issueLink", {**link, "comment": None}, token=None).status
            == 400
        )
        missing = {**link, "outwardIssue": {"key": "OPS-9"}}
        assert call("POST", f"{stub.url}/rest/api/2/issueLink", missing, token=None).status == 400
        assert call("POST", f"{stub.url}/rest/api/2/issueLink", link, token=None).status == 201
        assert [path for path, _ in stub.rejected] == ["POST /rest/api/2/issue"] * 2 + [
            "POST /rest/api/2/issueLink"
        ] * 2
        assert "transition.name: is read-only" in stub.rejected[1][1][0]
    finally:
        stub.stop()
