"""The engine's web page in headless Chromium, as an on-call engineer uses it: the incident is
listed with its severity, services, age and who was paged; ack from the incident's page lands on
its timeline. Hostile alert labels stay text; cross-origin and token-less forms are refused."""

from __future__ import annotations

import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from errorgate.incidents.web import WebPage
from tests.support.incidents import TOKEN, EngineServer, alert, alertmanager_payload, call

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


def _oncall(at: datetime) -> list[dict[str, str | None]]:
    return [{"team": "payments", "primary": "alice", "secondary": "bob", "until": "2026-12-08T08:00:00Z"}]


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[EngineServer]:
    server = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}", clock=time.time)  # type: ignore[arg-type]
    WebPage(server.api, _oncall).install()
    starts = (datetime.now(UTC) - timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
    payload = alertmanager_payload(alert("checkout", "P1", starts=starts, alertname=HOSTILE))
    assert server.post_alerts(payload).status == 200
    [inc] = server.incidents()
    server.engine.record(
        int(inc["id"]), "escalated", "engine", "escalation level 1: paged alice via pagerduty"
    )
    yield server
    server.stop()


def _form(srv: EngineServer, path: str, fields: dict[str, str], **headers: str) -> Any:
    host = urllib.parse.urlsplit(srv.url).netloc
    return call("POST", srv.url + path, token=None, raw=urllib.parse.urlencode(fields).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded", "Host": host, **headers})  # fmt: skip


def test_cross_origin_or_tokenless_forms_change_nothing(srv: EngineServer) -> None:
    [inc] = srv.incidents()
    path = f"/incidents/{inc['id']}/ack"
    assert _form(srv, path, {"token": TOKEN, "by": "mallory"}, Origin="http://evil.example").status == 403
    assert _form(srv, path, {"by": "mallory"}, Origin=srv.url).status == 401
    assert _form(srv, path, {"token": "wrong", "by": "mallory"}, Origin=srv.url).status == 401
    assert _form(srv, path, {"token": TOKEN, "by": "mallory"}).status == 403  # no Origin, no Referer
    assert srv.incidents()[0]["status"] == "open"
    outcomes = [(a["action"], a["outcome"]) for a in srv.engine.audit_trail() if a["actor"] == "mallory"]
    assert outcomes.count(("web:ack", "cross-origin")) == 2 and outcomes.count(("web:ack", "denied")) == 2
    ok = _form(srv, path, {"token": TOKEN, "by": "alice"}, Origin=srv.url)
    assert ok.status == 200  # the 303 to the incident page, followed
    assert srv.incidents()[0]["status"] == "acknowledged"


def test_page_escapes_labels_and_forbids_scripts(srv: EngineServer) -> None:
    page = call("GET", srv.url + "/", token=None)
    assert page.status == 200
    assert "<script>" not in page.body and "&lt;script&gt;" in page.body
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none' covers it


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian package chromium not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_on_call_engineer_acks_from_the_page(srv: EngineServer, browser: Any) -> None:
    page = browser.new_page()
    page.goto(srv.url + "/")
    row = page.locator("#incidents tr", has_text="checkout")
    cells = row.inner_text().split("\t")
    assert cells[1] == "P1" and cells[4] == "checkout" and cells[-1] == "alice"  # severity, services, paged
    assert re.fullmatch(r"\d+ s", cells[-2])  # age
    assert "payments" in page.locator("#oncall").inner_text()
    assert "<script>" in row.inner_text()  # the hostile label, shown as text
    row.locator("a").click()
    page.locator("form[action$='/ack'] input[name=token]").fill(TOKEN)
    page.locator("form[action$='/ack'] input[name=by]").fill("alice")
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_load_state()
    assert page.locator("#status").inner_text() == "acknowledged"
    entry = page.locator("#timeline tr", has_text="acknowledged via web page")
    assert "alice" in entry.inner_text()
    # Signed in once: a note needs no token now.
    assert page.locator("form[action$='/note'] input[name=token]").count() == 0
    page.locator("input[name=text]").fill("rolled back <b>v2</b>")
    page.get_by_role("button", name="Add note").click()
    page.wait_for_load_state()
    assert "rolled back <b>v2</b>" in page.locator("#timeline").inner_text()
    assert page.title() != "pwned" and page.locator("img").count() == 0
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert TOKEN not in str(cookies) and cookies["errorgate_session"]["httpOnly"]
