"""The service catalog (``governance/services.yaml``): who owns a service, how critical it
is, its SLO, compliance scopes and escalation policy. Classification, retention and
alert routing all read it, so its schema is validated strictly and errors name the key.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from errorgate.governance.yamlfile import load_model

ComplianceScope = Literal["pci", "sox", "hipaa", "gdpr"]


class CatalogError(ValueError):
    """A problem in the service catalog file; the message names the key path."""


class ErrorRateThresholds(BaseModel):
    """Errors per minute above which an alert fires vs. only a review ticket is opened."""

    model_config = ConfigDict(extra="forbid")
    alert_per_minute: float = Field(default=60, gt=0)
    review_per_minute: float = Field(default=10, gt=0)


class ServiceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str = Field(min_length=1, description="owning team, used for alert routing")
    tier: int = Field(ge=1, le=4, description="criticality: 1 is most critical")
    slo: float = Field(default=0.999, gt=0, lt=1, description="availability objective, e.g. 0.999")
    compliance: list[ComplianceScope] = Field(default_factory=list)
    escalation: str = Field(default="default", description="escalation policy name")
    error_rate: ErrorRateThresholds = Field(default_factory=ErrorRateThresholds)
    description: str = ""

    @property
    def error_budget(self) -> float:
        return 1.0 - self.slo


class EscalationPolicy(BaseModel):
    """Who is paged. ``oncall: TEAM`` refers to the team's rotations in ``governance/oncall.yaml``
    (the current form); fixed ``primary``/``secondary``/``lead`` names are still read."""

    model_config = ConfigDict(extra="forbid")
    oncall: str | None = None
    primary: str | None = Field(default=None, min_length=1)
    secondary: str | None = None
    lead: str | None = None
    escalate_after: str = "15m"  # wait before the secondary is paged, then the lead
    pagerduty_service_key_env: str | None = None
    opsgenie_team: str | None = None
    slack_channel: str | None = None

    @model_validator(mode="after")
    def _someone(self) -> EscalationPolicy:
        if not self.oncall and not self.primary:
            raise ValueError("set oncall (a team in oncall.yaml) or primary")
        return self

    def targets(self) -> dict[str, str]:
        """Level -> paging target name (PagerDuty routing-key file, Alertmanager receiver). With
        ``oncall`` these are the rotation's targets ``<team>-primary`` etc.; the engine resolves
        them to people from oncall.yaml."""
        if self.oncall:
            return {level: f"{self.oncall}-{level}" for level in ("primary", "secondary", "lead")}
        levels = {"primary": self.primary, "secondary": self.secondary, "lead": self.lead}
        return {k: v for k, v in levels.items() if v}


class TeamEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    escalation: dict[str, EscalationPolicy] = Field(default_factory=dict)
    slack_channel: str | None = None


class ServiceCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: ServiceEntry = Field(default_factory=lambda: ServiceEntry(owner="unowned", tier=3))
    teams: dict[str, TeamEntry] = Field(default_factory=dict)
    services: dict[str, ServiceEntry] = Field(default_factory=dict)

    @field_validator("services")
    @classmethod
    def _names(cls, value: dict[str, ServiceEntry]) -> dict[str, ServiceEntry]:
        for name in value:
            if not name.strip():
                raise ValueError("service names must not be empty")
        return value

    def lookup(self, service: str) -> ServiceEntry:
        """The entry for ``service``; unknown services get ``default``."""
        return self.services.get(service, self.default)

    def is_known(self, service: str) -> bool:
        return service in self.services

    @cached_property
    def owners(self) -> list[str]:
        return sorted({s.owner for s in self.services.values()} | {self.default.owner})


def load_catalog(path: str | Path | None = None) -> ServiceCatalog:
    """Load ``path`` or the bundled ``governance/services.yaml``."""
    catalog, source, _ = load_model(path, "services.yaml", ServiceCatalog, CatalogError, "service catalog")
    for name, entry in catalog.services.items():
        team = catalog.teams.get(entry.owner)
        if catalog.teams and team is None:
            raise CatalogError(
                f"{source}: services.{name}.owner: team {entry.owner!r} is not defined under teams:"
            )
        if team is not None and team.escalation and entry.escalation not in team.escalation:
            raise CatalogError(
                f"{source}: services.{name}.escalation: policy {entry.escalation!r} is not defined "
                f"under teams.{entry.owner}.escalation"
            )
    return catalog
