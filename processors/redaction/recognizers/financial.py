"""Payment cards, bank accounts, US social security and taxpayer numbers."""

from __future__ import annotations

import re
from typing import Any

from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import IbanRecognizer

from errorgate.processors.redaction.recognizers.base import Gate, RegexRecognizer, digit_count


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """Issuer by BIN range; None for numbers no card network issues (most numeric ids)."""
    n = len(digits)
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and n == 16:
        return "mastercard"  # 2-series BINs (2221-2720) are what default Presidio misses
    if two in (34, 37) and n == 15:
        return "amex"
    if (
        four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= six <= 622925
    ) and 16 <= n <= 19:
        return "discover"
    if two == 35 and 16 <= n <= 19:
        return "jcb"  # JCB's 35 range (3528-3589 assigned, the rest of 35 reserved to it)
    if (300 <= int(digits[:3]) <= 305 or two in (36, 38, 39)) and 14 <= n <= 19:
        return "diners"
    if two == 62 and 16 <= n <= 19:
        return "unionpay"
    if four in (2131, 1800) and n == 15:
        return "jcb"  # JCB's older 15-digit numbers
    if (two == 50 or 56 <= two <= 69 or four == 604) and 12 <= n <= 19:
        # Maestro: 50 and 56-69, 12 to 19 digits (the BINs not taken above), and the old 0604
        # range that card-number references (and Faker's Maestro provider) still list.
        return "maestro"
    return None


class CardRecognizer(RegexRecognizer):
    ENTITY = "CREDIT_CARD"
    PATTERNS = [
        ("card_luhn_bin", r"(?<![\d.-])(?:\d[ -]?){12,18}\d(?![\d-]|\.\d)", 0.9),
        # 12-digit Maestro numbers only right after a card word: bare 12-digit ids are common.
        (
            "card_12_with_context",
            r"(?i:card|pan|maestro)\W{1,12}(?:\w+\W{1,3}){0,1}(?P<v>(?<![\d.-])\d{12})(?![\d-]|\.\d)",
            0.8,
        ),
    ]
    GATE = r"(?<!\d)(?:\d[ -]?){11}\d"
    MIN_DIGITS = 12

    def precheck(self, text: str) -> bool:
        return digit_count(text) >= 12

    def validate(self, value: str, text: str, start: int) -> bool:
        digits = value.replace(" ", "").replace("-", "")
        if not 12 <= len(digits) <= 19:
            return False
        seps = {c for c in value if not c.isdigit()}
        if len(seps) > 1:
            return False
        return card_brand(digits) is not None and luhn_ok(digits)


_IBAN_HINT = re.compile(r"[A-Z]{2}\d{2}")


class TelemetryIbanRecognizer(IbanRecognizer):
    """Presidio's IBAN checksum validation, skipped for strings that cannot hold one."""

    def __init__(self) -> None:
        super().__init__(name=type(self).__name__)

    def gate(self) -> Gate:
        search = _IBAN_HINT.search
        return lambda text, lower, digits: digits >= 2 and search(text) is not None

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        if _IBAN_HINT.search(text) is None:
            return []
        base: Any = super()
        results: list[RecognizerResult] = base.analyze(text, entities, nlp_artifacts, regex_flags)
        return results


def _ssn_parts_ok(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and group != "00" and serial != "0000"


class TelemetrySsnRecognizer(RegexRecognizer):
    """Dashed SSNs, or bare 9 digits only next to an ``ssn`` label: bare 9-digit numbers in
    telemetry are ids far more often than SSNs (Presidio's weak patterns fire on them)."""

    ENTITY = "US_SSN"
    FLAGS = re.IGNORECASE
    GATE = r"\d{3}-\d{2}-\d{4}|ssn|social"
    GATE_LOWER = True
    MIN_DIGITS = 9
    PATTERNS = [
        ("ssn_dashed", r"(?<![\d-])(?P<v>[0-8]\d{2}-\d{2}-\d{4})(?![\d-])", 0.8),
        (
            "ssn_labelled",
            r"\b(?:ssn|social[ _-]?security(?:[ _-]?(?:number|no))?)\W{0,3}(?P<v>[0-8]\d{8})\b",
            0.85,
        ),
    ]

    def precheck(self, text: str) -> bool:
        return digit_count(text) >= 9

    def validate(self, value: str, text: str, start: int) -> bool:
        d = value.replace("-", "")
        return _ssn_parts_ok(d[:3], d[3:5], d[5:])


class TelemetryItinRecognizer(RegexRecognizer):
    ENTITY = "US_ITIN"
    GATE = r"9\d{2}-\d{2}-\d{4}"
    MIN_DIGITS = 9
    PATTERNS = [
        ("itin_dashed", r"(?<![\d-])9\d{2}-(?:5\d|6[0-5]|7\d|8[0-8]|9[0-2]|9[4-9])-\d{4}(?![\d-])", 0.75)
    ]

    def precheck(self, text: str) -> bool:
        return digit_count(text) >= 9
