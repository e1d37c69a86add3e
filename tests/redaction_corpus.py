"""A labelled corpus of telemetry-shaped strings with planted PII and decoys (Faker, seeded).

Each ``Sample`` says which substrings are PII (and of which type) and which are decoys that
must survive. ``evaluate`` scores any analyzer that returns ``(start, end)`` spans: a planted
value counts as caught when a finding covers it; a finding that touches no planted value is a
false positive; a decoy touched by any finding is over-redaction. Shared by the tests and
``bench/redaction.py``.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

import phonenumbers
from faker import Faker


@dataclass
class Sample:
    text: str
    free_text: bool
    pii: list[tuple[str, str]] = field(default_factory=list)  # (entity type, substring)
    decoys: list[str] = field(default_factory=list)
    kind: str = ""


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def nhs_valid_number(rng: random.Random) -> str:
    """A 10-digit id that passes the UK NHS mod-11 check (default Presidio flags such ids)."""
    while True:
        digits = [rng.randint(0, 9) for _ in range(9)]
        if digits[0] == 0:
            continue
        check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
        if check == 11:
            check = 0
        if check == 10:
            continue
        return "".join(map(str, digits)) + str(check)


def _phone(fake: Faker, rng: random.Random) -> str:
    while True:
        style = rng.randrange(4)
        if style == 0:
            number = f"+1 {rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        elif style == 1:
            number = f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        elif style == 2:
            number = f"+44 20 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}"
        else:
            number = f"+49 30 {rng.randint(1000000, 9999999)}"
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(number, "US")):
                return number
        except phonenumbers.NumberParseException:
            continue


def _jwt(rng: random.Random) -> str:
    def b64(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    sig = base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode()
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': str(rng.randint(1, 10**6)), 'iat': 1700000000})}.{sig}"


def _alnum(
    rng: random.Random,
    n: int,
    alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _decoys(rng: random.Random, fake: Faker) -> dict[str, Callable[[], str]]:
    return {
        "trace_id": lambda: rng.randbytes(16).hex(),
        "span_id": lambda: rng.randbytes(8).hex(),
        "uuid": lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "hex_id": lambda: rng.randbytes(12).hex(),
        "route": lambda: rng.choice(
            ["/api/v1/orders/{order_id}", "/users/:id/cart", "/healthz", "/v2/payments/{id}/refund"]
        ),
        "host": lambda: f"{fake.word()}-{rng.randint(1, 40)}.svc.cluster.local",
        "version": lambda: (
            f"{rng.randint(1, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}.{rng.randint(0, 255)}"
        ),
        "duration": lambda: rng.choice(
            [f"{rng.randint(1, 999)}ms", f"{rng.randint(1, 59)}s", f"{rng.random():.3f}s"]
        ),
        "timestamp": lambda: (
            fake.date_time_between(datetime(2024, 1, 1), datetime(2024, 12, 31)).strftime(
                "%Y-%m-%dT%H:%M:%S.%f"
            )[:-3]
            + "Z"
        ),
        "error_code": lambda: rng.choice(
            ["E1042", "ORA-00942", "ECONNRESET", "HTTP 503", "grpc-status=14", "ERR_TLS_CERT_ALTNAME_INVALID"]
        ),
        "nhs_like_id": lambda: nhs_valid_number(rng),
        "long_number": lambda: str(rng.randint(10**11, 10**12 - 1)),
        "unix_ms": lambda: str(rng.randint(1_600_000_000_000, 1_800_000_000_000)),
        "dotted_attr": lambda: rng.choice(
            ["o.id", "service.name", "db.statement", "k8s.pod.name", "http.target"]
        ),
    }


def build_corpus(n: int = 400, seed: int = 20241128) -> list[Sample]:
    """``n`` samples: about two thirds carry PII, the rest are PII-free lines full of decoys."""
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    d = _decoys(rng, fake)

    def card() -> str:
        kind = rng.randrange(4)
        if kind == 0:
            number = luhn_complete("4", 16, rng)
        elif kind == 1:
            number = luhn_complete(str(rng.randint(51, 55)), 16, rng)
        elif kind == 2:
            number = luhn_complete(str(rng.randint(2221, 2720)), 16, rng)  # Mastercard 2-series
        else:
            number = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        if rng.random() < 0.5 and len(number) == 16:
            sep = rng.choice([" ", "-"])
            number = sep.join(number[i : i + 4] for i in range(0, 16, 4))
        return number

    def ssn() -> str:
        return f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"

    def ip() -> str:
        return f"{rng.choice([203, 198, 81, 92, 151])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"

    templates: list[Callable[[], Sample]] = []

    def t(fn: Callable[[], Sample]) -> None:
        templates.append(fn)

    t(
        lambda: (
            lambda e, tr: Sample(
                f"login failed for {e} trace_id={tr}", True, [("EMAIL_ADDRESS", e)], [tr], "email"
            )
        )(fake.email(), d["trace_id"]())
    )
    t(
        lambda: (
            lambda e, r: Sample(
                f"GET {r}?email={quote(e)} 200", False, [("EMAIL_ADDRESS", quote(e))], [r], "email_urlencoded"
            )
        )(fake.email(), "/api/v1/users")
    )
    t(
        lambda: (
            lambda p, u: Sample(
                f"sms to {p} queued, message id {u}", True, [("PHONE_NUMBER", p)], [u], "phone"
            )
        )(_phone(fake, rng), d["uuid"]())
    )
    t(
        lambda: (
            lambda p: Sample(
                f"/notify?to={quote(p)}&channel=sms",
                False,
                [("PHONE_NUMBER", quote(p))],
                [],
                "phone_urlencoded",
            )
        )(_phone(fake, rng))
    )
    t(
        lambda: (
            lambda c, ts: Sample(
                f"{ts} payment declined card={c} code=E1042",
                True,
                [("CREDIT_CARD", c)],
                [ts, "E1042"],
                "card",
            )
        )(card(), d["timestamp"]())
    )
    t(lambda: (lambda s_: Sample(f"kyc check failed ssn {s_}", True, [("US_SSN", s_)], [], "ssn"))(ssn()))
    t(
        lambda: (
            lambda i, v: Sample(
                f"request from {i} handled by checkout {v}", True, [("IP_ADDRESS", i)], [v], "ip"
            )
        )(ip(), "v" + d["version"]())
    )
    t(
        lambda: (
            lambda n_, dur: Sample(
                f"Customer {n_} requested a refund after {dur}", True, [("PERSON", n_)], [dur], "person"
            )
        )(f"{fake.first_name()} {fake.last_name()}", d["duration"]())
    )
    t(lambda: (lambda j: Sample(f"Authorization: Bearer {j}", False, [("JWT", j)], [], "jwt"))(_jwt(rng)))
    t(
        lambda: (
            lambda tok: Sample(
                f"upstream call with Bearer {tok} failed", True, [("AUTH_CREDENTIAL", tok)], [], "bearer"
            )
        )(_alnum(rng, 40))
    )
    t(
        lambda: (lambda b: Sample(f"Authorization: Basic {b}", False, [("AUTH_CREDENTIAL", b)], [], "basic"))(
            base64.b64encode(f"{fake.user_name()}:{fake.password()}".encode()).decode()
        )
    )
    t(
        lambda: (
            lambda k: Sample(f"using aws key {k} for s3 upload", True, [("AWS_ACCESS_KEY", k)], [], "aws")
        )("AKIA" + _alnum(rng, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"))
    )
    t(
        lambda: (lambda k: Sample(f"git clone failed token={k}", True, [("GITHUB_TOKEN", k)], [], "github"))(
            "ghp_" + _alnum(rng, 36)
        )
    )
    t(
        lambda: (lambda k: Sample(f"slack notify error {k}", True, [("SLACK_TOKEN", k)], [], "slack"))(
            f"xoxb-{rng.randint(10**10, 10**11)}-{_alnum(rng, 24)}"
        )
    )
    t(
        lambda: (lambda k: Sample(f"stripe client init {k}", False, [("STRIPE_KEY", k)], [], "stripe"))(
            "sk_live_" + _alnum(rng, 24)
        )
    )
    t(
        lambda: (lambda k: Sample(f"maps api key={k}", False, [("GOOGLE_API_KEY", k)], [], "google"))(
            "AIza" + _alnum(rng, 35, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
        )
    )
    t(
        lambda: (
            lambda body: Sample(
                f"loaded key -----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----",
                True,
                [("PRIVATE_KEY", body)],
                [],
                "private_key",
            )
        )(base64.b64encode(rng.randbytes(48)).decode())
    )
    t(
        lambda: (
            lambda pw: Sample(
                f"POST /login user=bob&password={pw}&remember=1", False, [("PASSWORD", pw)], [], "password"
            )
        )(fake.password(length=12, special_chars=False))
    )
    t(
        lambda: (
            lambda sid: Sample(
                f"Cookie: theme=dark; sessionid={sid}", False, [("SESSION_COOKIE", sid)], [], "cookie"
            )
        )(_alnum(rng, 32))
    )
    t(
        lambda: (
            lambda u, pw, h: Sample(
                f"connecting to postgres://{u}:{pw}@{h}:5432/orders",
                True,
                [("URL_CREDENTIALS", f"{u}:{pw}")],
                [h],
                "url_credentials",
            )
        )(fake.user_name(), fake.password(length=10, special_chars=False), d["host"]())
    )
    t(
        lambda: (lambda iban: Sample(f"payout to {iban} scheduled", True, [("IBAN_CODE", iban)], [], "iban"))(
            fake.iban()
        )
    )

    def clean_line() -> Sample:
        picks = rng.sample(sorted(d), 4)
        values = [d[k]() for k in picks]
        text = " ".join(f"{k}={v}" for k, v in zip(picks, values, strict=True))
        return Sample(text, rng.random() < 0.5, [], values, "clean")

    out: list[Sample] = []
    planted = 0
    for i in range(n):
        if i % 3 == 2:
            out.append(clean_line())
        else:
            out.append(templates[planted % len(templates)]())
            planted += 1
    return out


@dataclass
class Score:
    planted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    caught: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    findings: int = 0
    false_positives: int = 0
    decoys: int = 0
    decoys_hit: int = 0
    clean_lines: int = 0
    clean_lines_flagged: int = 0

    def recall(self, entity: str | None = None) -> float:
        if entity is None:
            planted = sum(self.planted.values())
            return sum(self.caught.values()) / planted if planted else 1.0
        return self.caught[entity] / self.planted[entity] if self.planted[entity] else 1.0

    def precision(self) -> float:
        return 1 - self.false_positives / self.findings if self.findings else 1.0

    def decoy_survival(self) -> float:
        return 1 - self.decoys_hit / self.decoys if self.decoys else 1.0

    def as_dict(self) -> dict[str, object]:
        return {
            "recall": round(self.recall(), 4),
            "precision": round(self.precision(), 4),
            "decoy_survival": round(self.decoy_survival(), 4),
            "clean_lines_flagged": self.clean_lines_flagged,
            "clean_lines": self.clean_lines,
            "recall_by_type": {k: round(self.recall(k), 4) for k in sorted(self.planted)},
        }


def evaluate(samples: Iterable[Sample], spans_of: Callable[[Sample], list[tuple[int, int]]]) -> Score:
    score = Score()
    for s in samples:
        spans = spans_of(s)
        planted = []
        for entity, value in s.pii:
            start = s.text.find(value)
            assert start >= 0, (value, s.text)
            end = start + len(value)
            planted.append((start, end))
            score.planted[entity] += 1
            # Caught when findings together cover the whole planted value.
            covered = [(max(a, start), min(b, end)) for a, b in spans if a < end and start < b]
            if sum(b - a for a, b in covered) >= end - start:
                score.caught[entity] += 1
        for a, b in spans:
            score.findings += 1
            if not any(a < pe and ps < b for ps, pe in planted):
                score.false_positives += 1
        for decoy in s.decoys:
            start = s.text.find(decoy)
            end = start + len(decoy)
            score.decoys += 1
            if any(a < end and start < b for a, b in spans):
                score.decoys_hit += 1
        if not s.pii:
            score.clean_lines += 1
            score.clean_lines_flagged += bool(spans)
    return score
