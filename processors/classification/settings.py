"""Settings of the ``classify`` processor (documented in ``processors/classify.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from errorgate.component import ComponentConfig
from errorgate.config import Duration
from errorgate.processors.classification.metrics import DEFAULT_LABEL_CAPS
from errorgate.processors.deploys.settings import DeploysConfig


class EpisodesConfig(ComponentConfig):
    bucket: Duration = 60.0
    persistent_min_buckets: int = Field(default=5, ge=1)
    quiet_period: Duration = 1800.0
    flap_window: int = Field(default=21, ge=3, le=200)
    flap_start: float = Field(default=0.5, gt=0, le=1)
    flap_end: float = Field(default=0.25, ge=0, le=1)
    reopen_window: Duration = 86400.0
    reopen_count: int = Field(default=2, ge=1)
    deterministic_min_occurrences: int = Field(default=3, ge=1)
    max_states: int = Field(default=10_000, ge=1)


class IncidentsConfig(ComponentConfig):
    window: Duration = 120.0
    min_services: int = Field(default=3, ge=2)
    min_errors: int = Field(default=3, ge=1)


class BurnRuleConfig(ComponentConfig):
    severity: Literal["P1", "P2", "P3", "P4"]
    burn_rate: float = Field(gt=0)
    long_window: Duration
    short_window: Duration
    max_tier: int = Field(default=4, ge=1, le=4)
    urgency: Literal["1-high", "2-medium", "3-low"] = "1-high"


def _default_rules() -> list[BurnRuleConfig]:
    from errorgate.processors.classification.severity import DEFAULT_RULES

    return [BurnRuleConfig.model_validate(r.__dict__) for r in DEFAULT_RULES]


class SeverityConfig(ComponentConfig):
    min_requests: int = Field(default=10, ge=1)
    rules: list[BurnRuleConfig] = Field(default_factory=_default_rules)


class MetricsConfig(ComponentConfig):
    label_caps: dict[str, int] = Field(default_factory=dict)


class ClassifyConfig(ComponentConfig):
    catalog: str | None = None
    taxonomy: str | None = None
    stack_frames: int = Field(default=5, ge=1, le=50)
    baggage: list[str] = Field(default_factory=list)
    retry_attributes: list[str] = Field(
        default_factory=lambda: ["http.request.resend_count", "retry.attempt", "retry.count"]
    )
    max_services: int = Field(default=1000, ge=1)
    max_correlated_spans: int = Field(default=50_000, ge=0)
    episodes: EpisodesConfig = Field(default_factory=EpisodesConfig)
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
    severity: SeverityConfig = Field(default_factory=SeverityConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    deploys: DeploysConfig = Field(default_factory=DeploysConfig)

    def gateway_label_caps(self, gateway_caps: Mapping[str, int]) -> dict[str, int]:
        """Gateway-wide caps (service.telemetry.metrics.label_caps) win over classify's defaults;
        caps set in classify's config win over both."""
        caps = {label: value for label, value in DEFAULT_LABEL_CAPS.items() if label not in gateway_caps}
        caps.update(self.metrics.label_caps)
        return caps
