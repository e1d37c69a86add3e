"""The HAProxy agent-check listener has no authentication (the protocol has none): bound to
every interface it lets any host read which services errorgate would take out of a route, so
start-up says so once, naming the config key. The wildcard listeners live for a moment on an
ephemeral port."""

from __future__ import annotations

import logging
import socket

import pytest

from errorgate.component import HttpAnswer
from errorgate.config import AgentCheckConfig
from errorgate.service.agent import AgentCheckServer


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _health(name: str) -> HttpAnswer | None:
    return None


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    "endpoint",
    ["0.0.0.0:0", pytest.param("[::]:0", marks=pytest.mark.skipif(not _has_ipv6(), reason="no IPv6"))],
)
def test_agent_on_all_interfaces_warns_once_naming_the_key(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = AgentCheckServer(AgentCheckConfig(endpoint=endpoint), _health)
    server.start()
    server.stop()
    (warning,) = _warnings(caplog)
    assert warning.startswith("service.telemetry.agent_check.endpoint listens on all network interfaces")
    assert "no authentication" in warning


@pytest.mark.parametrize("endpoint", ["127.0.0.1:0", ":0"])
def test_agent_on_loopback_does_not_warn(endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    """``:port`` means 127.0.0.1 for the agent, as for the metrics endpoint."""
    caplog.set_level(logging.INFO)
    server = AgentCheckServer(AgentCheckConfig(endpoint=endpoint), _health)
    server.start()
    assert server.endpoint.startswith("127.0.0.1:")
    server.stop()
    assert _warnings(caplog) == []
