"""Shared by the tests that bind listeners to every interface (receivers, the HAProxy agent
check): whether this host can bind IPv6 at all, and the WARNING lines start-up logged."""

from __future__ import annotations

import logging
import socket

import pytest


def has_ipv6() -> bool:
    """Containers often run without IPv6; the ``[::]`` cases are skipped there, not failed."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
