"""Telemetry-tuned recognizers, one small class per kind, in Presidio's style.

``default_recognizers`` builds the curated set; packs select from it by class name.
"""

from __future__ import annotations

from presidio_analyzer import EntityRecognizer

from errorgate.processors.redaction.recognizers.contact import (
    EncodedEmailRecognizer,
    EncodedPhoneRecognizer,
    TelemetryEmailRecognizer,
    TelemetryPhoneRecognizer,
)
from errorgate.processors.redaction.recognizers.financial import (
    CardRecognizer,
    TelemetryIbanRecognizer,
    TelemetryItinRecognizer,
    TelemetrySsnRecognizer,
)
from errorgate.processors.redaction.recognizers.ner import NameRecognizer
from errorgate.processors.redaction.recognizers.network import (
    IpAddressRecognizer,
    TelemetryMacAddressRecognizer,
)
from errorgate.processors.redaction.recognizers.secrets import (
    AuthHeaderRecognizer,
    AwsKeyRecognizer,
    GitHubTokenRecognizer,
    GoogleApiKeyRecognizer,
    HighEntropyRecognizer,
    JwtRecognizer,
    PasswordValueRecognizer,
    PrivateKeyRecognizer,
    SessionCookieRecognizer,
    SlackTokenRecognizer,
    StripeKeyRecognizer,
    UrlCredentialsRecognizer,
)

BUILTIN: dict[str, type[EntityRecognizer]] = {
    cls.__name__: cls
    for cls in (
        CardRecognizer,
        TelemetryIbanRecognizer,
        TelemetrySsnRecognizer,
        TelemetryItinRecognizer,
        TelemetryEmailRecognizer,
        EncodedEmailRecognizer,
        TelemetryPhoneRecognizer,
        EncodedPhoneRecognizer,
        IpAddressRecognizer,
        TelemetryMacAddressRecognizer,
        NameRecognizer,
        JwtRecognizer,
        AuthHeaderRecognizer,
        AwsKeyRecognizer,
        GitHubTokenRecognizer,
        SlackTokenRecognizer,
        StripeKeyRecognizer,
        GoogleApiKeyRecognizer,
        PrivateKeyRecognizer,
        PasswordValueRecognizer,
        SessionCookieRecognizer,
        UrlCredentialsRecognizer,
        HighEntropyRecognizer,
    )
}

from errorgate.processors.redaction.specs import RECOGNIZER_ENTITIES  # noqa: E402

# The light name table (used without loading Presidio) must match the classes.
assert set(BUILTIN) == set(RECOGNIZER_ENTITIES), sorted(set(BUILTIN) ^ set(RECOGNIZER_ENTITIES))

__all__ = ["BUILTIN"]
