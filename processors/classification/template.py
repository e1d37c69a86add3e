"""Message parameterization: the variable parts of an error message become placeholders.

The result is ``errorgate.error.template`` and part of the fingerprint. It is built before
redaction runs, so it errs on the side of replacing too much: anything quoted, anything
containing a digit, anything that looks like an address, id or key=value payload is replaced.
"""

from __future__ import annotations

import functools
import re

MAX_TEMPLATE_CHARS = 300

# Order matters: composite shapes (URLs, emails, timestamps) before their parts (numbers).
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://\S+"), "<url>"),
    (re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), "<email>"),
    (
        re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
        "<uuid>",
    ),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
            r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"
        ),
        "<timestamp>",
    ),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    (re.compile(r"(?<![\w:])[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?![\w:])"), "<ip>"),
    (re.compile(r"\"[^\"]*\"|'[^']*'|`[^`]*`|\u201c[^\u201d]*\u201d"), "<str>"),
    (
        re.compile(r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"),
        "<hex>",
    ),
    (
        re.compile(
            r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hrs?|hours?|d|days?)\b",
            re.IGNORECASE,
        ),
        "<duration>",
    ),
    # key=value / key: value pairs carry payload values (user=alice, card: 4111...).
    (re.compile(r"\b([A-Za-z_][\w.\-]*)=(?!<)[^\s,;&)\]}]+"), r"\1=<val>"),
    (re.compile(r"\b[A-Za-z0-9+/_\-]{24,}={0,2}"), "<token>"),
    (re.compile(r"[+\-]?\b\d+(?:[.,]\d+)*\b"), "<num>"),
    # Identifiers mixing letters and digits (order A12345, user42) after pure numbers are gone.
    (re.compile(r"\b(?=\w*\d)\w+\b"), "<id>"),
]
_SPACES = re.compile(r"\s+")
_REPEATS = re.compile(r"(<(?:num|id|str|val|hex|ip)>)(?:[\s,;/]+\1)+")


def parameterize(message: str) -> str:
    """``message`` with variable parts replaced by ``<url>``, ``<email>``, ``<uuid>``, ``<num>`` …"""
    if not message:
        return ""
    # Error floods repeat the same messages: short ones are memoized (bounded, in memory only).
    if len(message) <= _MEMO_CHARS:
        return _memoized(message)
    return _parameterize(message)


_MEMO_CHARS = 1024


@functools.lru_cache(maxsize=4096)
def _memoized(message: str) -> str:
    return _parameterize(message)


def _parameterize(message: str) -> str:
    # Only the first line: later lines of multi-line messages are usually dumps of payloads.
    text = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    text = _REPEATS.sub(r"\1", text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > MAX_TEMPLATE_CHARS:
        text = text[:MAX_TEMPLATE_CHARS] + "…"
    return text
