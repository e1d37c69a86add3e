"""End-user network identifiers: IP and MAC addresses."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import MacAddressRecognizer

from errorgate.processors.redaction.recognizers.base import Gate, RegexRecognizer

_VERSION_WORDS = ("version", "release", "build", "firmware", "sdk", "agent/")
_VERSION_SUFFIXES = ("v", "v=", "ver", "@", "==", "/")


class IpAddressRecognizer(RegexRecognizer):
    """IPv4/IPv6 validated with ``ipaddress``. Dotted quads that are versions (``v1.2.3.4``,
    ``version 10.0.19041.1``, ``1.2.3.4-beta``) are not addresses; loopback and unspecified
    addresses identify nobody. Which *keys* keep infrastructure IPs is policy, not here."""

    ENTITY = "IP_ADDRESS"
    GATE = r"\d\.\d{1,3}\.\d{1,3}\.\d|:[0-9A-Fa-f]{0,4}:"

    def gate(self) -> Gate:
        search = re.compile(self.GATE).search  # type: ignore[arg-type]
        return lambda text, lower, digits: (
            (text.count(".") >= 3 or text.count(":") >= 2) and search(text) is not None
        )

    PATTERNS = [
        ("ipv4", r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d|[-+][A-Za-z0-9])", 0.75),
        (
            "ipv6",
            r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])",
            0.75,
        ),
    ]

    def precheck(self, text: str) -> bool:
        return text.count(".") >= 3 or text.count(":") >= 2

    def validate(self, value: str, text: str, start: int) -> bool:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return False
        if ip.is_loopback or ip.is_unspecified:
            return False
        if ip.version == 6:
            # ``12:30:00`` never parses; require the address shapes people write.
            return "::" in value or value.count(":") == 7
        before = text[max(0, start - 16) : start].lower()
        if before.rstrip().endswith(_VERSION_SUFFIXES):
            return False
        return not any(w in before for w in _VERSION_WORDS)


# Presidio's MAC patterns (case-insensitive) without their word boundaries.
_MAC_GATE = re.compile(r"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")


class TelemetryMacAddressRecognizer(MacAddressRecognizer):
    def __init__(self) -> None:
        super().__init__(name=type(self).__name__)

    def gate(self) -> Gate:
        search = _MAC_GATE.search
        return lambda text, lower, digits: (
            (text.count(":") >= 5 or text.count("-") >= 5 or text.count(".") >= 2)
            and search(text) is not None
        )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        if text.count(":") < 5 and text.count("-") < 5 and text.count(".") < 2:
            return []
        base: Any = super()
        results: list[RecognizerResult] = base.analyze(text, entities, nlp_artifacts, regex_flags)
        return results
