"""Shared pytest setup. Everything binds 127.0.0.1; nothing reaches beyond loopback."""

from __future__ import annotations

import os

# The SDK's exporters must not pick up a developer's OTEL_* settings.
for _k in [k for k in os.environ if k.startswith("OTEL_")]:
    del os.environ[_k]
