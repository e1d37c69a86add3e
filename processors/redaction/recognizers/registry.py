"""The built-in recognizers, listed once.

Each recognizer is a small class in a module of this package that states its own name (the
class name) and the entity types it reports, as Presidio's recognizers do; ``BUILTIN_RECOGNIZERS``
is the one list of them. Adding a recognizer: write its class, add its row here.

A row repeats its class's entity types, and names the class by string rather than importing it,
on purpose: packs, policy validation and ``errorgate rules audit`` need the recognizer -> entities
mapping without loading Presidio (over a second, and spaCy with it), so this module imports
nothing heavy and only the engine resolves rows to classes. ``tests/test_redact_registry.py``
fails when a row and its class disagree, a class is left out, or a name is listed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from presidio_analyzer import EntityRecognizer


@dataclass(frozen=True, slots=True)
class Registered:
    """One built-in recognizer as the light side (packs, policy, audit) sees it."""

    name: str  # the class name: packs and ``disable_recognizers`` select recognizers by it
    entities: tuple[str, ...]  # the entity types the class reports
    module: str  # the module of this package that defines the class


BUILTIN_RECOGNIZERS: tuple[Registered, ...] = (
    Registered("CardRecognizer", ("CREDIT_CARD",), "financial"),
    Registered("TelemetryIbanRecognizer", ("IBAN_CODE",), "financial"),
    Registered("TelemetrySsnRecognizer", ("US_SSN",), "financial"),
    Registered("TelemetryItinRecognizer", ("US_ITIN",), "financial"),
    Registered("TelemetryEmailRecognizer", ("EMAIL_ADDRESS",), "contact"),
    Registered("EncodedEmailRecognizer", ("EMAIL_ADDRESS",), "contact"),
    Registered("TelemetryPhoneRecognizer", ("PHONE_NUMBER",), "contact"),
    Registered("EncodedPhoneRecognizer", ("PHONE_NUMBER",), "contact"),
    Registered("IpAddressRecognizer", ("IP_ADDRESS",), "network"),
    Registered("TelemetryMacAddressRecognizer", ("MAC_ADDRESS",), "network"),
    Registered("NameRecognizer", ("PERSON", "LOCATION"), "ner"),
    Registered("RoleNameRecognizer", ("PERSON",), "people"),
    Registered("ListedNameRecognizer", ("PERSON",), "people"),
    Registered("ProperNameRecognizer", ("PERSON",), "people"),
    Registered("StreetAddressRecognizer", ("STREET_ADDRESS",), "address"),
    Registered("DateOfBirthRecognizer", ("DATE_OF_BIRTH",), "identity"),
    Registered("NationalIdRecognizer", ("NATIONAL_ID",), "national_ids"),
    Registered("JwtRecognizer", ("JWT",), "secrets"),
    Registered("AuthHeaderRecognizer", ("AUTH_CREDENTIAL",), "secrets"),
    Registered("AwsKeyRecognizer", ("AWS_ACCESS_KEY",), "secrets"),
    Registered("GitHubTokenRecognizer", ("GITHUB_TOKEN",), "secrets"),
    Registered("SlackTokenRecognizer", ("SLACK_TOKEN",), "secrets"),
    Registered("StripeKeyRecognizer", ("STRIPE_KEY",), "secrets"),
    Registered("GoogleApiKeyRecognizer", ("GOOGLE_API_KEY",), "secrets"),
    Registered("PrivateKeyRecognizer", ("PRIVATE_KEY",), "secrets"),
    Registered("PasswordValueRecognizer", ("PASSWORD",), "secrets"),
    Registered("SessionCookieRecognizer", ("SESSION_COOKIE",), "secrets"),
    Registered("UrlCredentialsRecognizer", ("URL_CREDENTIALS",), "secrets"),
    Registered("HighEntropyRecognizer", ("HIGH_ENTROPY_SECRET",), "secrets"),
)

# Built-in recognizer name -> the entity types it reports.
RECOGNIZER_ENTITIES: dict[str, tuple[str, ...]] = {r.name: r.entities for r in BUILTIN_RECOGNIZERS}


def recognizer_class(entry: Registered) -> type[EntityRecognizer]:
    """The class a row names. Imports its module, and so Presidio: for the engine, not for
    anything that only reads the table."""
    from presidio_analyzer import EntityRecognizer

    cls = getattr(import_module(f".{entry.module}", __package__), entry.name)
    if not (isinstance(cls, type) and issubclass(cls, EntityRecognizer)):
        raise TypeError(f"{entry.module}.{entry.name} is not a Presidio EntityRecognizer")
    return cls
