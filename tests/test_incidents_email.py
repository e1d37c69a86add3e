"""E-mail (SMTP) as an escalation channel, against a loopback aiosmtpd server: stable dedup key
in Message-ID, subject and header; acknowledge/resolve thread under the page."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

from errorgate.config import EscalationDeliveryConfig, SmtpConfig
from errorgate.incidents.engine import Incident
from errorgate.incidents.notify import DeliveryError, Email, Page, channels

aiosmtpd = pytest.importorskip("aiosmtpd.controller")


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (list(envelope.rcpt_tos), email.message_from_bytes(envelope.content, policy=email.policy.default))
        )
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[_Inbox, int]]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    inbox = _Inbox()
    controller = aiosmtpd.Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _incident() -> Incident:
    return Incident(id=7, status="open", severity="P1", title="ErrorgateErrorRateHigh on checkout", team="payments",
                    services=["checkout"], first_error_at=0.0, fired_at=0.0, opened_at=0.0, acknowledged_at=None,
                    resolved_at=None, closed_at=None, escalation_step=0, escalated_at=None, postmortem_key=None,
                    postmortem_status=None, postmortem_done=False)  # fmt: skip


def test_pages_carry_a_stable_dedup_key_and_follow_ups_thread(smtp: tuple[_Inbox, int]) -> None:
    inbox, port = smtp
    cfg = EscalationDeliveryConfig(smtp=SmtpConfig(host="127.0.0.1", port=port, from_addr="pager@errorgate.test",
                                                   to="{person}@oncall.test"))  # fmt: skip
    channel = channels(cfg)["email"]
    inc = _incident()
    channel.trigger(Page(inc, "bob", 1, "http://127.0.0.1:9466/incidents/7"))
    channel.trigger(Page(inc, "bob", 1, "http://127.0.0.1:9466/incidents/7"))  # a re-send
    channel.trigger(Page(inc, "carol", 2, "http://127.0.0.1:9466/incidents/7"))
    channel.acknowledge(inc)
    channel.resolve(inc)
    rcpts = [r for r, _ in inbox.messages]
    assert rcpts == [["bob@oncall.test"], ["bob@oncall.test"], ["carol@oncall.test"], ["carol@oncall.test"],
                     ["carol@oncall.test"]]  # fmt: skip
    ids = [m["Message-ID"] for _, m in inbox.messages]
    first = "<errorgate-incident-7.triggered.1@errorgate.test>"
    assert ids == [first, first, "<errorgate-incident-7.triggered.2@errorgate.test>",
                   "<errorgate-incident-7.acknowledged@errorgate.test>",
                   "<errorgate-incident-7.resolved@errorgate.test>"]  # fmt: skip
    for _, m in inbox.messages:
        assert str(m["Subject"]).strip().startswith("[errorgate-incident-7] ")
        assert m["X-Errorgate-Dedup-Key"] == "errorgate-incident-7"
    assert [m["In-Reply-To"] for _, m in inbox.messages[2:]] == [first] * 3


def test_an_unreachable_server_is_a_delivery_error_and_a_missing_secret_names_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = Email(SmtpConfig(host="127.0.0.1", port=port, from_addr="pager@errorgate.test"))
    with pytest.raises(DeliveryError, match=r"^email: "):
        channel.trigger(Page(_incident(), "bob", 1, "http://x"))
    monkeypatch.delenv("SMTP_PW", raising=False)
    with pytest.raises(DeliveryError, match=r"incidents\.escalation\.smtp\.username_env"):
        Email(SmtpConfig(host="h", from_addr="a@b.c", username_env="SMTP_PW", password_env="SMTP_PW"))
