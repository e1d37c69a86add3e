"""The alerting policy (``alert_rules/policy.yaml``): severities per tier, thresholds, burn-rate
windows, routing channels. Validated strictly so a typo fails generation with the key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from errorgate.config import format_validation_error, parse_duration

Severity = Literal["P1", "P2", "P3", "P4"]
Channel = Literal["pagerduty", "opsgenie", "slack", "webhook"]
BurnWindowName = Literal["fast", "slow", "ticket"]
SEVERITIES: tuple[Severity, ...] = ("P1", "P2", "P3", "P4")
ERROR_KINDS = ("transient", "intermittent", "persistent", "cascading")
# Alert-only kinds: burn-rate alerts cover all errors of a service, pipeline alerts errorgate itself.
ALERT_KINDS = (*ERROR_KINDS, "slo", "pipeline")

POLICY_PATH = Path(__file__).with_name("policy.yaml")


class PolicyError(ValueError):
    """A problem in policy.yaml; the message names the key path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _duration(value: str) -> str:
    parse_duration(value)
    return value


# Kept as the original text: it is written verbatim into Prometheus/Alertmanager/Grafana files.
DurationStr = Annotated[str, AfterValidator(_duration)]


class Timing(_Model):
    for_: DurationStr = Field(default="0s", alias="for")
    keep_firing_for: DurationStr = "0s"


class ErrorRatePolicy(_Model):
    window: DurationStr = "5m"
    alert: Timing = Field(default_factory=Timing)
    review: Timing = Field(default_factory=Timing)
    no_data: Literal["ok", "alerting", "nodata"] = "ok"


class BurnWindow(_Model):
    factor: float = Field(gt=0)
    long: DurationStr
    short: DurationStr
    for_: DurationStr = Field(default="0s", alias="for")


class BurnRatePolicy(_Model):
    windows: dict[BurnWindowName, BurnWindow]
    keep_firing_for: DurationStr = "0s"
    no_data: Literal["ok", "alerting", "nodata"] = "ok"


class TierPolicy(_Model):
    error_rate_alert: Severity
    error_rate_review: Severity
    burn_rate: dict[BurnWindowName, Severity]


class PipelineAlert(_Model):
    severity: Severity
    window: DurationStr = "5m"
    for_: DurationStr = Field(default="0s", alias="for")
    min_items: int = Field(default=0, ge=0)


class PipelinePolicy(_Model):
    team: str
    service: str = "errorgate"
    dead_letters: PipelineAlert
    circuit_open: PipelineAlert
    queue_filling: PipelineAlert
    redaction_fail_closed: PipelineAlert
    refusing_data: PipelineAlert


class IncidentPolicy(_Model):
    severity: Severity = "P2"
    for_: DurationStr = Field(default="0s", alias="for")
    keep_firing_for: DurationStr = "5m"
    inhibit_severities: list[Severity] = Field(default_factory=lambda: list[Severity](["P3", "P4"]))


class SeverityRoute(_Model):
    channels: list[Channel] = Field(min_length=1)
    repeat_interval: DurationStr
    escalate: bool = False


class TimeRange(_Model):
    start: str = Field(pattern=r"^\d\d:\d\d$")
    end: str = Field(pattern=r"^\d\d:\d\d$")


class MaintenanceWindow(_Model):
    name: str = Field(min_length=1)
    weekdays: list[str] = Field(default_factory=list)
    times: list[TimeRange] = Field(default_factory=list)
    location: str = "UTC"
    severities: list[Severity] = Field(min_length=1)


class RoutingPolicy(_Model):
    group_by: list[str]
    group_wait: DurationStr = "30s"
    group_interval: DurationStr = "5m"
    severities: dict[Severity, SeverityRoute]
    kinds: dict[str, dict[Severity, list[Channel]]] = Field(default_factory=dict)
    pagerduty_severity: dict[Severity, Literal["critical", "error", "warning", "info"]]
    opsgenie_priority: dict[Severity, Literal["P1", "P2", "P3", "P4", "P5"]]
    secrets_dir: str
    webhook_url: str
    fallback_slack_channel: str
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)

    @field_validator("kinds")
    @classmethod
    def _kinds(
        cls, value: dict[str, dict[Severity, list[Channel]]]
    ) -> dict[str, dict[Severity, list[Channel]]]:
        for kind in value:
            if kind not in ALERT_KINDS:
                raise ValueError(f"unknown error kind {kind!r} (known: {', '.join(ALERT_KINDS)})")
        return value

    @model_validator(mode="after")
    def _complete(self) -> RoutingPolicy:
        for name, mapping in (
            ("severities", self.severities),
            ("pagerduty_severity", self.pagerduty_severity),
            ("opsgenie_priority", self.opsgenie_priority),
        ):
            missing = [s for s in SEVERITIES if s not in mapping]
            if missing:
                raise ValueError(f"routing.{name}: missing {', '.join(missing)}")
        return self


class GrafanaPolicy(_Model):
    folder: str = "errorgate"
    folder_uid: str = "errorgate-alerts"
    datasource_uid: str = "prometheus"
    exec_err_state: Literal["OK", "Error", "Alerting"] = "Error"


class Policy(_Model):
    evaluation_interval: DurationStr = "1m"
    error_rate: ErrorRatePolicy
    burn_rate: BurnRatePolicy
    tiers: dict[int, TierPolicy]
    pipeline: PipelinePolicy
    incident: IncidentPolicy = Field(default_factory=IncidentPolicy)
    routing: RoutingPolicy
    grafana: GrafanaPolicy = Field(default_factory=GrafanaPolicy)

    @model_validator(mode="after")
    def _tiers(self) -> Policy:
        missing = [str(t) for t in (1, 2, 3, 4) if t not in self.tiers]
        if missing:
            raise ValueError(f"tiers: missing tier {', '.join(missing)}")
        for tier, tp in self.tiers.items():
            for window in self.burn_rate.windows:
                if window not in tp.burn_rate:
                    raise ValueError(f"tiers.{tier}.burn_rate: no severity for window {window!r}")
        return self


def load_policy(path: str | Path | None = None) -> Policy:
    source = Path(path) if path is not None else POLICY_PATH
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise PolicyError(f"cannot read alert policy {source}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"{source}: not valid YAML: {e}") from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as e:
        raise PolicyError(f"{source}: {format_validation_error(e)}") from None


def seconds(value: str) -> float:
    return parse_duration(value)
