"""``sample``'s settings (documented with the processor, ``processors/sample.py``)."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from errorgate.component import ComponentConfig
from errorgate.config import AssemblyConfig, Duration


class AttributeRule(ComponentConfig):
    key: str = Field(min_length=1)
    values: list[str | int | float | bool] | None = None
    pattern: str | None = None

    @model_validator(mode="after")
    def _one_matcher(self) -> AttributeRule:
        if (self.values is None) == (self.pattern is None):
            raise ValueError("give exactly one of values or pattern")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"pattern is not a valid regular expression: {e}") from None
        return self


class FloodConfig(ComponentConfig):
    first_n_per_minute: int = Field(default=10, ge=1)
    rate_per_second_after: float = Field(default=1.0, ge=0)
    max_fingerprints: int = Field(default=10_000, ge=1)


class LogSamplingConfig(ComponentConfig):
    per_service_probability: dict[str, float] = Field(default_factory=dict)
    default_probability: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _probabilities(self) -> LogSamplingConfig:
        for service, p in self.per_service_probability.items():
            if not 0 <= p <= 1:
                raise ValueError(f"per_service_probability.{service}: must be between 0 and 1")
        return self


class SampleConfig(AssemblyConfig):
    healthy_keep_probability: float = Field(default=0.1, ge=0, le=1)
    latency_threshold: Duration = 2.0
    attribute_rules: list[AttributeRule] = Field(default_factory=list)
    flood: FloodConfig = Field(default_factory=FloodConfig)
    logs: LogSamplingConfig = Field(default_factory=LogSamplingConfig)
    decision_cache_size: int = Field(default=100_000, ge=1)
