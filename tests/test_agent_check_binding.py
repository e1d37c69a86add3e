"""The HAProxy agent-check listener has no authentication (the protocol has none): bound to
every interface it lets any host read which services errorgate would take out of a route, so
start-up says so once, naming the config key. The wildcard listeners live for a moment on an
ephemeral port."""

from __future__ import annotations

import logging

import pytest

from errorgate.component import HttpAnswer
from errorgate.config import AgentCheckConfig
from errorgate.service.agent import AgentCheckServer
from tests.support.binding import has_ipv6, warnings_logged


def _health(name: str) -> HttpAnswer | None:
    return None


@pytest.mark.parametrize(
    "endpoint",
    ["0.0.0.0:0", pytest.param("[::]:0", marks=pytest.mark.skipif(not has_ipv6(), reason="no IPv6"))],
)
def test_agent_on_all_interfaces_warns_once_naming_the_key(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = AgentCheckServer(AgentCheckConfig(endpoint=endpoint), _health)
    server.start()
    server.stop()
    (warning,) = warnings_logged(caplog)
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
    assert warnings_logged(caplog) == []
