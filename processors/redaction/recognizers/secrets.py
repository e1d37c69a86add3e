"""Credentials and keys: what default Presidio does not cover at all."""

from __future__ import annotations

import math
import re
from collections import Counter

from errorgate.processors.redaction.recognizers.base import RegexRecognizer

_SECRET_KEYS = (
    r"password|passwd|pwd|pass|secret|client_secret|api[_-]?key|apikey|access[_-]?token|refresh[_-]?token"
    r"|auth[_-]?token|private[_-]?key|aws_secret_access_key|credentials?"
)


class JwtRecognizer(RegexRecognizer):
    ENTITY = "JWT"
    HINTS = ("eyJ",)
    PATTERNS = [("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{0,}", 0.95)]


class AuthHeaderRecognizer(RegexRecognizer):
    ENTITY = "AUTH_CREDENTIAL"
    HINTS = ("bearer", "basic", "token ", "digest")
    HINTS_LOWER = True
    FLAGS = re.IGNORECASE
    PATTERNS = [
        ("bearer", r"\b(?:bearer|token)\s+(?P<v>[A-Za-z0-9\-._~+/]{12,}=*)", 0.9),
        ("basic", r"\bbasic\s+(?P<v>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])", 0.9),
    ]


class AwsKeyRecognizer(RegexRecognizer):
    ENTITY = "AWS_ACCESS_KEY"
    HINTS = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")
    PATTERNS = [("aws_access_key_id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b", 0.95)]


class GitHubTokenRecognizer(RegexRecognizer):
    ENTITY = "GITHUB_TOKEN"
    HINTS = ("gh", "github_pat_")
    PATTERNS = [
        ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b", 0.95),
        ("github_fine_grained", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b", 0.95),
    ]


class SlackTokenRecognizer(RegexRecognizer):
    ENTITY = "SLACK_TOKEN"
    HINTS = ("xox", "hooks.slack.com")
    PATTERNS = [
        ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0.95),
        ("slack_webhook", r"hooks\.slack\.com/services/(?P<v>[A-Za-z0-9/]{20,})", 0.95),
    ]


class StripeKeyRecognizer(RegexRecognizer):
    ENTITY = "STRIPE_KEY"
    HINTS = ("_live_", "_test_")
    PATTERNS = [("stripe_key", r"\b(?:sk|rk|pk|whsec)_(?:live|test)_[A-Za-z0-9]{16,}\b", 0.95)]


class GoogleApiKeyRecognizer(RegexRecognizer):
    ENTITY = "GOOGLE_API_KEY"
    HINTS = ("AIza",)
    PATTERNS = [("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", 0.95)]


class PrivateKeyRecognizer(RegexRecognizer):
    ENTITY = "PRIVATE_KEY"
    HINTS = ("PRIVATE KEY",)
    # An unterminated block (truncated log line) still counts: redact to the end.
    PATTERNS = [
        (
            "pem_private_key",
            r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----(?:.|\n)*?(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----|\Z)",
            0.99,
        )
    ]


class PasswordValueRecognizer(RegexRecognizer):
    """``password=...`` in query strings, form bodies, JSON-ish and ``key: value`` text."""

    ENTITY = "PASSWORD"
    HINTS = ("pass", "pwd", "secret", "key", "token", "credential")
    HINTS_LOWER = True
    FLAGS = re.IGNORECASE
    PATTERNS = [
        (
            "secret_assignment",
            rf"(?<![A-Za-z0-9])(?:{_SECRET_KEYS})[\"']?\s*[=:]\s*[\"']?(?P<v>[^\s&\"',;}}]{{3,}})",
            0.85,
        )
    ]

    def validate(self, value: str, text: str, start: int) -> bool:
        # Already-masked values and placeholders are not secrets.
        return not (
            value.startswith("<")
            or value.startswith("*")
            or value.lower() in {"null", "none", "true", "false"}
        )


class SessionCookieRecognizer(RegexRecognizer):
    ENTITY = "SESSION_COOKIE"
    HINTS = ("sess", "sid=", "SID=", "auth", "remember", "token")
    HINTS_LOWER = True
    FLAGS = re.IGNORECASE
    PATTERNS = [
        (
            "session_cookie",
            r"(?<![A-Za-z0-9])(?:[A-Za-z0-9_.-]*sess(?:ion)?(?:id)?|sid|jsessionid|phpsessid|connect\.sid"
            r"|remember_token|auth_token|_csrf)=(?P<v>[^\s;,&]{6,})",
            0.85,
        )
    ]


class UrlCredentialsRecognizer(RegexRecognizer):
    ENTITY = "URL_CREDENTIALS"
    HINTS = ("://",)
    PATTERNS = [("url_userinfo", r"[a-zA-Z][a-zA-Z0-9+.-]*://(?P<v>[^\s/@:]+:[^\s/@]+)@", 0.95)]


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_HEX = re.compile(r"^[0-9a-fA-F-]+$")
_CLASSES = (re.compile("[a-z]"), re.compile("[A-Z]"), re.compile("[0-9]"))


class HighEntropyRecognizer(RegexRecognizer):
    """Long random-looking tokens. Hex ids, trace/span ids and UUIDs are spared: they are
    identifiers of telemetry, not credentials, and keeping them is what makes traces usable."""

    ENTITY = "HIGH_ENTROPY_SECRET"
    GATE = r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32}"  # lookbehind: each run is scanned once
    MIN_LEN = 32
    PATTERNS = [("high_entropy", r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])", 0.7)]

    def precheck(self, text: str) -> bool:
        return len(text) >= 32

    def validate(self, value: str, text: str, start: int) -> bool:
        if _HEX.match(value):
            return False
        # The pattern admits ASCII only, so these searches are exactly islower/isupper/isdigit.
        classes = sum(rx.search(value) is not None for rx in _CLASSES)
        if classes < 3 or ("/" in value.strip("/") and value.count("/") > 2):
            return False  # paths and words joined by slashes are routes, not keys
        return shannon_entropy(value) >= 4.3
