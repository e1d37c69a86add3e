"""Attribute keys that say what their value is: ``billing_details.name``, ``customer.phone``,
``shipping_address.address1``, ``card.number``, ``birthDate``.

A structured value carries no context words: "Linda Thompson" under ``customer.name`` or
"611 1234" under ``telephone`` look like nothing to the recognizers, which need a role or phone
word before them in free text. The key is that word. A hint names the entity a key's value
holds; the value is then taken whole when its shape fits (a name is words, a phone number is
digits in groups, a card number passes Luhn), so ``service.name: checkout`` or a
``server.address`` is never touched (OpenTelemetry's own keys are told apart by their
namespace).

Keys are split into lower-case tokens at dots, underscores, dashes and camelCase humps
(``paymentMethod.number`` -> payment, method, number), and each rule reads tokens, not
spellings, so the many naming styles of real schemas need no list of their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from errorgate.processors.redaction.recognizers.financial import luhn_ok

_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

# Who a name, a phone or an address belongs to when a key says so.
PERSON_OWNERS = frozenset(
    [
        "customer",
        "user",
        "enduser",
        "client",
        "full",
        "display",
        "given",
        "first",
        "last",
        "middle",
        "family",
        "maiden",
        "nick",
        "holder",
        "cardholder",
        "account",
        "recipient",
        "consignee",
        "consignor",
        "passenger",
        "patient",
        "contact",
        "person",
        "billing",
        "shipping",
        "delivery",
        "owner",
        "sender",
        "payer",
        "payee",
        "beneficiary",
        "guest",
        "member",
        "employee",
        "driver",
        "applicant",
        "buyer",
        "seller",
        "subscriber",
        "caller",
        "requester",
        "reporter",
        "assignee",
        "nurse",
        "doctor",
        "physician",
        "practitioner",
        "parent",
        "guardian",
        "emergency",
        "spouse",
        "customer",
        "legal",
    ]
)
# OpenTelemetry semantic-convention namespaces and other things that have names and addresses
# but are not people or homes ("service.name", "server.address", "team.name", "product.name").
NOT_OWNERS = frozenset(
    [
        "service",
        "host",
        "k8s",
        "container",
        "process",
        "db",
        "messaging",
        "network",
        "os",
        "cloud",
        "faas",
        "deployment",
        "device",
        "telemetry",
        "otel",
        "code",
        "rpc",
        "http",
        "url",
        "server",
        "client",
        "span",
        "event",
        "metric",
        "file",
        "thread",
        "feature",
        "flag",
        "gen",
        "ai",
        "browser",
        "app",
        "team",
        "queue",
        "topic",
        "table",
        "index",
        "bucket",
        "job",
        "task",
        "cluster",
        "node",
        "pod",
        "namespace",
        "region",
        "zone",
        "exception",
        "error",
        "library",
        "scope",
        "sdk",
        "peer",
        "net",
        "log",
        "aws",
        "gcp",
        "azure",
        "artifact",
        "vcs",
        "cicd",
        "test",
        "session",
        "destination",
        "source",
        "tls",
        "dns",
        "function",
        "method",
        "class",
        "module",
        "package",
        "image",
        "schema",
        "field",
        "column",
        "instrument",
        "resource",
        "tenant",
        "project",
        "org",
        "organization",
        "company",
        "product",
        "sku",
        "item",
        "plan",
        "tier",
        "env",
        "environment",
        "branch",
        "repo",
        "repository",
        "workflow",
        "pipeline",
        "step",
        "stage",
        "model",
        "dataset",
        "processor",
        "exporter",
        "receiver",
        "extension",
        "component",
        "bank",
        "merchant",
        "store",
        "shop",
        "brand",
        "vendor",
        "network",
        "interface",
        "memory",
        "ip",
        "mac",
        "email",
        "mail",
        "web",
        "socket",
        "endpoint",
        "remote",
        "local",
        "proxy",
    ]
)
_PERSON_ALONE = frozenset(
    {"surname", "lastname", "firstname", "givenname", "familyname", "fullname", "displayname",
     "recipient", "consignee", "cardholder", "beneficiary", "payee"}
)  # fmt: skip
_PHONE = frozenset({"phone", "telephone", "tel", "mobile", "msisdn", "cellphone", "fax", "phonenumber"})
_ADDRESS = re.compile(r"(?:address|addr|street)\d*$")
_ADDRESS_LINE = re.compile(r"(?:line|address)\d+$")
_CARD = frozenset({"card", "pan", "cc", "creditcard", "ccnumber", "cardnumber"})
_CARD_NUMBER_OWNERS = frozenset({"payment", "instrument", "method", "credit", "debit"})
_BIRTH = frozenset({"dob", "birthdate", "birthday", "dateofbirth"})


def key_tokens(key: str) -> tuple[str, ...]:
    return tuple(t.lower() for t in _SPLIT.split(key) if t)


def _person(tokens: tuple[str, ...]) -> bool:
    if tokens and tokens[-1] in _PERSON_ALONE:
        return True
    if "name" not in tokens:
        return False
    before = tokens[: tokens.index("name")]
    return bool(before) and before[-1] not in NOT_OWNERS and any(t in PERSON_OWNERS for t in before)


def _phone(tokens: tuple[str, ...]) -> bool:
    return any(t in _PHONE for t in tokens) and not any(t in NOT_OWNERS for t in tokens[:1])


def _street(tokens: tuple[str, ...]) -> bool:
    if "street" in tokens:
        return True
    if not any(_ADDRESS.match(t) for t in tokens) or any(t in NOT_OWNERS for t in tokens):
        return False
    alone = len(tokens) == 1 or all(_ADDRESS.match(t) or _ADDRESS_LINE.match(t) for t in tokens)
    return alone or any(
        t in PERSON_OWNERS or t in {"home", "postal", "mailing", "residential"} for t in tokens
    )


def _card(tokens: tuple[str, ...]) -> bool:
    if any(t in _CARD for t in tokens):
        return True
    return "number" in tokens and any(t in _CARD_NUMBER_OWNERS for t in tokens)


def _birth(tokens: tuple[str, ...]) -> bool:
    joined = "".join(tokens)
    return any(t in _BIRTH for t in tokens) or "dateofbirth" in joined or "birthdate" in joined


# Value shapes: what a value under such a key must look like to be taken whole.
_NAME_VALUE = re.compile(r"[^\W\d_][^\W\d_'’.\- ]*(?:[ '’.\-]+[^\W\d_][^\W\d_'’.\-]*){0,6}\.?")
_PHONE_VALUE = re.compile(r"\+?[\d()\s./-]{7,24}")
_CARD_VALUE = re.compile(r"\d(?:[ -]?\d){11,18}")
_DATE_VALUE = re.compile(r"(?=.*\d)[\w ,./-]{6,30}")
_HAS_LETTER = re.compile(r"[^\W\d_]")


def _name_shaped(value: str) -> bool:
    return 2 <= len(value) <= 100 and _NAME_VALUE.fullmatch(value.strip()) is not None


def _phone_shaped(value: str) -> bool:
    digits = sum(c.isdigit() for c in value)
    return 7 <= digits <= 15 and _PHONE_VALUE.fullmatch(value.strip()) is not None


def _street_shaped(value: str) -> bool:
    return 3 <= len(value) <= 200 and _HAS_LETTER.search(value) is not None and "@" not in value


def _card_shaped(value: str) -> bool:
    v = value.strip()
    return _CARD_VALUE.fullmatch(v) is not None and luhn_ok(v.replace(" ", "").replace("-", ""))


def _date_shaped(value: str) -> bool:
    return _DATE_VALUE.fullmatch(value.strip()) is not None


@dataclass(frozen=True, slots=True)
class KeyHint:
    """The entity a key's value holds, and the shape the value must have to be taken whole."""

    entity: str
    key_says: Callable[[tuple[str, ...]], bool]
    value_fits: Callable[[str], bool]

    @property
    def rule(self) -> str:
        return f"key_hint_{self.entity.lower()}"


# Most specific first: "card.holder_name" is a name, "card.number" a card.
KEY_HINTS: tuple[KeyHint, ...] = (
    KeyHint("DATE_OF_BIRTH", _birth, _date_shaped),
    KeyHint("PERSON", _person, _name_shaped),
    KeyHint("PHONE_NUMBER", _phone, _phone_shaped),
    KeyHint("CREDIT_CARD", _card, _card_shaped),
    KeyHint("STREET_ADDRESS", _street, _street_shaped),
)


def hint_for(key: str) -> KeyHint | None:
    """The hint of an attribute key (its last path part decides for nested keys' parents)."""
    tokens = key_tokens(key.replace("[]", ""))
    for hint in KEY_HINTS:
        if hint.key_says(tokens):
            return hint
    return None
