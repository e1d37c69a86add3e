"""Error grouping in the spirit of Sentry: service + error type + the innermost in-app stack
frames (``module:function``, never line numbers) when a stack trace exists, otherwise the
parameterized message + route. Taxonomy fingerprint rules (``matcher:glob -> group``) override.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

# Python: File "/srv/app/orders/db.py", line 42, in get_order
_PY = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)')
# Java / .NET / Kotlin: at com.shop.OrderDao.find(OrderDao.java:42)
_JVM = re.compile(r"^\s*at ([\w$.<>\[\]`]+)\.([\w$<>`]+)\s*\(")
# Node.js: at handler (/app/src/routes.js:10:5)  |  at /app/src/routes.js:10:5
_NODE = re.compile(r"^\s*at (?:(?:async )?([\w$.<>\[\] ]+?) \()?(?:file://)?([^():]+\.[cm]?[jt]sx?):\d+")
# Go: github.com/shop/orders.(*Repo).Find(...)  followed by a tab-indented file line
_GO = re.compile(r"^([\w./\-]+?)\.((?:\([*\w]+\)\.)?[\w$]+)\(")

_VENDOR_PATH = ("site-packages", "dist-packages", "/lib/python", "node_modules", "node:internal", "<frozen")
_VENDOR_MODULE = (
    "java.",
    "javax.",
    "jdk.",
    "sun.",
    "com.sun.",
    "kotlin.",
    "kotlinx.",
    "scala.",
    "org.springframework.",
    "org.apache.",
    "io.grpc.",
    "io.netty.",
    "reactor.",
    "okhttp3.",
    "System.",
    "Microsoft.",
    "runtime.",
    "net/http.",
    "google.golang.org/",
    "golang.org/",
)


def _module_from_path(path: str) -> str:
    """Deployment-independent module name: the last two path segments without extension."""
    parts = [p for p in re.split(r"[\\/]", path) if p and p not in (".", "..")]
    if parts:
        parts[-1] = re.sub(r"\.[A-Za-z0-9]+$", "", parts[-1])
    return ".".join(parts[-2:])


def stack_frames(stacktrace: str) -> list[tuple[str, str, bool]]:
    """(module, function, in_app) frames, innermost first."""
    frames: list[tuple[str, str, bool]] = []
    python = False
    for line in stacktrace.splitlines():
        if m := _PY.match(line):
            python = True
            path = m.group(1)
            frames.append((_module_from_path(path), m.group(2), not any(v in path for v in _VENDOR_PATH)))
        elif m := _JVM.match(line):
            module = m.group(1)
            frames.append((module, m.group(2), not module.startswith(_VENDOR_MODULE)))
        elif m := _NODE.match(line):
            path = m.group(2)
            frames.append(
                (
                    _module_from_path(path),
                    (m.group(1) or "<anonymous>").strip(),
                    not any(v in path for v in _VENDOR_PATH),
                )
            )
        elif m := _GO.match(line):
            module = m.group(1)
            frames.append((module, m.group(2), not module.startswith(_VENDOR_MODULE)))
    if python:  # Python prints the innermost frame last
        frames.reverse()
    return frames


def top_frames(stacktrace: str, limit: int) -> list[str]:
    """The innermost ``limit`` in-app frames as ``module:function`` (all frames if none is in-app)."""
    frames = stack_frames(stacktrace)
    in_app = [f for f in frames if f[2]] or frames
    return [f"{module}:{function}" for module, function, _ in in_app[:limit]]


def _digest(parts: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def fingerprint(service: str, error_type: str, frames: Sequence[str], template: str, route: str) -> str:
    """Stable hex id of the error group."""
    if frames:
        return _digest(["v1", "stack", service, error_type, *frames])
    return _digest(["v1", "message", service, error_type, template, route])


def rule_fingerprint(service: str, group: str) -> str:
    """Fingerprint forced by a taxonomy rule: everything the rule matches groups together per service."""
    return _digest(["v1", "rule", service, group])
