"""E-mail addresses and phone numbers, plain and URL-encoded."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from urllib.parse import unquote

import phonenumbers
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from errorgate.processors.redaction import offline
from errorgate.processors.redaction.recognizers.base import RegexRecognizer, digit_count, result

DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")
# Regions a national number may belong to when a phone word precedes it: the EU/EEA, the UK and
# Switzerland, and the largest other markets. Each is one libphonenumber parse of a candidate.
DEFAULT_PHONE_CONTEXT_REGIONS = (
    "AT", "BE", "BG", "CH", "CY", "CZ", "DK", "EE", "ES", "FI", "GR", "HR", "HU", "IE", "IS", "IT",
    "LI", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK", "TR", "UA",
    "CA", "MX", "BR", "AR", "CL", "CO", "IN", "JP", "KR", "CN", "AU", "NZ", "ZA", "SG", "IL", "AE",
)  # fmt: skip


class TelemetryEmailRecognizer(RegexRecognizer):
    """E-mail addresses whose domain ends in a public suffix (tldextract's bundled snapshot,
    offline). Presidio's pattern lets ``/`` into the local part, so ``/users/jane@example.com``
    in a span name failed its own validation and leaked."""

    ENTITY = "EMAIL_ADDRESS"
    HINTS = ("@",)
    PATTERNS = [
        ("email", r"(?<![\w.%+-])[A-Za-z0-9._%+-]*[A-Za-z0-9_%+-]@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", 0.9)
    ]

    def validate(self, value: str, text: str, start: int) -> bool:
        return offline.OFFLINE_EXTRACTOR(value.rsplit("@", 1)[1]).suffix != ""


class EncodedEmailRecognizer(RegexRecognizer):
    """``jane.doe%40example.com`` (and ``%2540``) in query strings and URLs."""

    ENTITY = "EMAIL_ADDRESS"
    HINTS = ("%40", "%2540")
    PATTERNS = [("email_urlencoded", r"(?<![\w.+-])[\w.+%-]+%(?:25)?40[\w-]+(?:\.[\w-]+)+", 0.9)]

    def validate(self, value: str, text: str, start: int) -> bool:
        decoded = unquote(unquote(value))
        return "@" in decoded and offline.OFFLINE_EXTRACTOR(decoded.rsplit("@", 1)[1]).suffix != ""


_PHONE_CANDIDATE = re.compile(
    r"(?<![\w.+/:-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}(?:[ -]\d{1,4})?\)[ .-]?)?\d[\d .-]{3,16}\d(?![\w/:-]|\.\d)"
)
# A phone word right before the number, with at most a few linking words between ("call back
# on", "phone number:", "reachable on mobile", "tel"): the number's shape is then enough.
_ADJACENT_TAIL = re.compile(
    r"\w*\.?(?:[ \t]+(?:number|no\.?|nr\.?|num|on|at|is|me|us|back|from|via|of|to|me at|us at))*[ \t]*[:=#]?[ \t]*$"
)


class TelemetryPhoneRecognizer(RegexRecognizer):
    """Phone numbers validated by libphonenumber over a bounded set of regions. Each region
    is a full libphonenumber scan, so it runs only on candidate substrings, and a bare run of
    digits without phone formatting counts only after a phone word: numeric ids are far more
    common in telemetry than unformatted phone numbers."""

    ENTITY = "PHONE_NUMBER"
    PATTERNS = []
    # The candidate's core ``\d[\d .-]{5,16}\d`` starts with seven such characters.
    GATE = r"(?<!\d)\d[\d .()-]{5}"
    MIN_DIGITS = 7
    # Word starts ("tel" also finds "telephone", "call" "called"), never inside an identifier
    # ("long_number", "hotel"); "number" alone is too generic.
    CONTEXT_WORDS = (
        "phone", "tel", "mobile", "cell", "sms", "fax", "call", "contact", "ring", "dial",
        "texting", "texted", "voicemail", "whatsapp", "reach", "handy", "telefon", "téléphone",
        "teléfono", "telefone", "telefono", "puhelin", "mobil", "tlf",
    )  # fmt: skip
    _CONTEXT = re.compile(rf"(?<![\w.-])(?:{'|'.join(CONTEXT_WORDS)})")

    def __init__(
        self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS, context_regions: Sequence[str] = ()
    ) -> None:
        self.regions = tuple(regions)
        # With a phone word just before it, a number may be national in any of these too.
        self.context_regions = tuple(dict.fromkeys((*regions, *context_regions)))
        super().__init__()

    def precheck(self, text: str) -> bool:
        return digit_count(text) >= 7

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if not self.precheck(text):
            return []
        found: list[RecognizerResult] = []
        for cand in _PHONE_CANDIDATE.finditer(text):
            raw = cand.group()
            if not 7 <= digit_count(raw) <= 15:
                continue
            before = text[max(0, cand.start() - 32) : cand.start()].lower()
            context = self._CONTEXT.search(before) is not None
            if _not_phone_shape(raw, context):
                continue
            adjacent = context and self._right_after_phone_word(before)
            rule = self._validated_rule(raw, context, adjacent)
            if rule is not None:
                found.append(result(self, self.ENTITY, cand.start(), cand.end(), *rule))
            elif adjacent and _grouped(raw):
                # A national number of any country, in its own grouping, right after a phone
                # word: no region list is complete, and the word says what the digits are.
                found.append(
                    result(self, self.ENTITY, cand.start(), cand.end(), 0.7, "phone_shape_after_phone_word")
                )
        return found

    def _validated_rule(self, raw: str, context: bool, adjacent: bool) -> tuple[float, str] | None:
        """Score and rule of a number libphonenumber validates, if it does."""
        if digit_count(raw) < 8:
            return None
        if raw.startswith("+") or any(c in raw for c in " -.()"):
            score, rule = 0.75, "phone_formatted"
        elif adjacent:  # a bare digit run further on is an id ("by phone ... about order 48943081")
            score, rule = 0.6, "phone_digits_with_context"
        else:
            return None
        if _valid_phone(raw, self.regions):
            return score, rule
        if context and _valid_phone(raw, self.context_regions):
            return score, "national_with_context"
        return None

    def _right_after_phone_word(self, before: str) -> bool:
        """The last phone word in ``before`` is followed only by linking words."""
        ends = [m.end() for m in self._CONTEXT.finditer(before)]
        return bool(ends) and _ADJACENT_TAIL.match(before, ends[-1]) is not None


def _grouped(raw: str) -> bool:
    """Digits in groups of 2 to 5 (a leading trunk prefix or area code of 1 to 4), as phone
    numbers are written; not a single run (an id), not a decimal or a version."""
    groups = [g for g in re.split(r"[^\d]+", raw) if g]
    return len(groups) >= 2 and all(len(g) <= 5 for g in groups[1:]) and len(groups[0]) <= 5


_DATE_SHAPES = ([4, 2, 2], [2, 2, 4], [4, 1, 1], [1, 1, 4], [4, 2, 1], [4, 1, 2], [2, 1, 4], [1, 2, 4])


def _not_phone_shape(raw: str, context: bool = False) -> bool:
    """Dates (``2024-05-01``), SSN shapes and dot-only groupings (versions, IPs like ``4.29.90.228``, unless
    shaped 3.3.4 as US numbers are written, or a phone word precedes them) are not phone numbers."""
    if any(c in raw for c in " ()+"):
        return False
    groups = [len(g) for g in re.split(r"[-./]", raw)]
    if groups in _DATE_SHAPES or groups == [3, 2, 4]:  # dates, SSN-shaped
        return True
    return "." in raw and "-" not in raw and groups != [3, 3, 4] and not context


@functools.lru_cache(maxsize=8192)
def _valid_phone(raw: str, regions: tuple[str, ...]) -> bool:
    """One parse per region (an international number needs none) instead of a matcher scan."""
    for region in (None,) if raw.startswith("+") else regions:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(raw, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


class EncodedPhoneRecognizer(RegexRecognizer):
    """``%2B44%2020%207946%200958`` and similar in query strings."""

    ENTITY = "PHONE_NUMBER"
    HINTS = ("%2B", "%2b", "%20", "%28", "%2D", "%2d")
    PATTERNS = [("phone_urlencoded", r"(?:%2[Bb]|%28|\+)?\d(?:\d|%20|%2[Dd]|%28|%29|[-.()]){7,28}\d", 0.75)]

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        self.regions = tuple(regions)
        super().__init__()

    def validate(self, value: str, text: str, start: int) -> bool:
        if "%" not in value:
            return False
        decoded = unquote(value)
        for region in self.regions:
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(decoded, region)):
                    return True
            except phonenumbers.NumberParseException:
                continue
        return False
