"""Alert webhooks -> the engine's alerts. Alertmanager's webhook (payload version 4) and
Grafana alerting's webhook contact point share a shape; both are validated strictly so a
malformed request is refused with the reason (400) before anything is stored."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from errorgate.config import format_validation_error

# Where errorgate's alert rules put the time of the first error (unix seconds or RFC 3339).
FIRST_ERROR_KEYS = ("first_error_at", "errorgate_first_error_at")
# Labels that name the incident an alert belongs to (classify's incident id, else the origin).
INCIDENT_LABELS = ("incident_id", "errorgate_incident_id")
ORIGIN_LABELS = ("origin_service", "errorgate_origin_service")


class WebhookError(ValueError):
    """A malformed webhook; the message names the field."""


def parse_time(value: str) -> float | None:
    """RFC 3339 -> unix seconds; Go's zero time (``0001-01-01T00:00:00Z``) -> None."""
    if value.startswith("0001-01-01"):
        return None
    return datetime.fromisoformat(value).timestamp()


class _Alert(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str
    endsAt: str = "0001-01-01T00:00:00Z"
    fingerprint: str = ""

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        try:
            parse_time(value)
        except ValueError:
            raise ValueError(f"not an RFC 3339 time: {value[:40]!r}") from None
        return value


class _AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    status: Literal["firing", "resolved"]
    alerts: list[_Alert] = Field(min_length=1)


class _GrafanaPayload(BaseModel):
    model_config = ConfigDict(extra="allow")
    groupKey: str = Field(min_length=1)
    status: Literal["firing", "resolved"]
    alerts: list[_Alert] = Field(min_length=1)


@dataclass
class AlertIn:
    fingerprint: str
    status: str
    labels: dict[str, str]
    starts_at: float
    ends_at: float | None
    first_error_at: float | None
    group_key: str
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def incident_key(self) -> str:
        """One incident per errorgate incident id, else per shared origin, else per alert group."""
        for name in INCIDENT_LABELS:
            if self.labels.get(name):
                return f"incident:{self.labels[name]}"
        for name in ORIGIN_LABELS:
            if self.labels.get(name):
                return f"origin:{self.labels[name]}"
        return f"group:{self.group_key}"


def _first_error(alert: _Alert) -> float | None:
    for source in (alert.annotations, alert.labels):
        for key in FIRST_ERROR_KEYS:
            raw = source.get(key, "").strip()
            if not raw:
                continue
            try:
                return float(raw)
            except ValueError:
                pass
            try:
                return parse_time(raw)
            except ValueError:
                raise WebhookError(
                    f"{key}: expected unix seconds or an RFC 3339 time, got {raw[:40]!r}"
                ) from None
    return None


def _stable_fingerprint(labels: dict[str, str]) -> str:
    # Alertmanager always sends one; Grafana may not. Labels identify an alert in both.
    return json.dumps(sorted(labels.items()), separators=(",", ":"))


def parse_alerts(body: bytes, source: Literal["alertmanager", "grafana"]) -> list[AlertIn]:
    """Validated alerts of a webhook request; ``WebhookError`` naming the field otherwise."""
    try:
        raw: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise WebhookError(f"request body is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise WebhookError("request body must be a JSON object with version, groupKey, status, alerts")
    model = _AlertmanagerPayload if source == "alertmanager" else _GrafanaPayload
    try:
        payload = model.model_validate(raw)
    except ValidationError as e:
        raise WebhookError(format_validation_error(e).replace("Value error, ", "")) from None
    result = []
    for alert in payload.alerts:
        starts = parse_time(alert.startsAt)
        if starts is None:
            raise WebhookError("startsAt: must be a real time, not the zero time")
        result.append(
            AlertIn(
                fingerprint=alert.fingerprint or _stable_fingerprint(alert.labels),
                status=alert.status,
                labels=dict(alert.labels),
                starts_at=starts,
                ends_at=parse_time(alert.endsAt),
                first_error_at=_first_error(alert),
                group_key=payload.groupKey,
                annotations=dict(alert.annotations),
            )
        )
    return result
