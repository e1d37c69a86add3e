"""Settings of classify's ``deploys`` section (documented in ``processors/classify.py``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from errorgate.component import ComponentConfig
from errorgate.config import Duration
from errorgate.processors.deploys.actions import Action, GrafanaAnnotation, IncidentTimeline


class VerdictConfig(ComponentConfig):
    window: Duration = 600.0
    # Requests each version needs in the window before its failure ratio or latency can decide.
    min_requests: int = Field(default=500, ge=1)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    # Absolute failure-ratio increase tolerated even when significant (0.01 = one point).
    max_failure_increase: float = Field(default=0.01, ge=0, le=1)
    # Occurrences of an error group the baseline never had that fail the candidate.
    new_fingerprint_min_count: int = Field(default=3, ge=1)
    # Latency fails when the candidate's per-slot p95s rank above the baseline's (Mann-Whitney U,
    # p < alpha) and its median slot p95 is worse by this fraction and by latency_min_difference:
    # significance alone would fail a 2 % slowdown on enough traffic, which no one rolls back for.
    max_latency_increase: float = Field(default=0.25, ge=0)
    latency_min_difference: Duration = 0.01
    # Slots each version needs (with latency_slot_min_samples durations each) before latency can
    # decide; 5 against 5 is the fewest at which a one-sided U test can reach p < 0.01.
    latency_min_slots: int = Field(default=5, ge=3)
    latency_slot_min_samples: int = Field(default=10, ge=1)


class HealthConfig(ComponentConfig):
    short_window: Duration = 300.0
    long_window: Duration = 3600.0
    fail_burn_rate: float = Field(default=14.4, gt=0)
    warn_burn_rate: float = Field(default=6.0, gt=0)
    min_requests: int = Field(default=10, ge=1)
    # Error kinds seen this recently count (intermittent → warn, persistent or cascade origin → fail).
    kind_window: Duration = 300.0
    # ...while the service burns its budget at least this fast (short window): an error group
    # that costs less than the SLO allows does not pull a route.
    kind_min_burn: float = Field(default=1.0, ge=0)
    # A better state must hold this long (wall clock) before the route sees it: no flapping.
    recover_after: Duration = 30.0
    default_slo: float = Field(default=0.999, gt=0, lt=1)


class RollbackConfig(ComponentConfig):
    enabled: bool = False
    dry_run: bool = False
    check_interval: Duration = 30.0
    cooldown: Duration = 1800.0  # per service, after a rollback fired
    services: list[str] = Field(default_factory=list)  # empty: every service
    # A fail errorgate answers over /api/v1/verdict (Argo Rollouts, Flagger, CI) is a judged
    # deploy too: acted on at once rather than at the next check_interval (same once-per-deploy
    # and cooldown). False leaves such deploys to the asking tool's own abort.
    asked_verdicts: bool = True
    actions: list[Action] = Field(default_factory=list)
    grafana: GrafanaAnnotation | None = None
    # errorgate's incident engine: each rollback goes on its service's open incident's timeline.
    incidents: IncidentTimeline | None = None

    @model_validator(mode="after")
    def _something_to_call(self) -> RollbackConfig:
        if self.enabled and not self.actions and not self.dry_run:
            raise ValueError("deploys.rollback.actions: enabled, but no action is configured")
        return self


class DeploysConfig(ComponentConfig):
    slot: Duration = 10.0
    retention: Duration = 3600.0
    version_ttl: Duration = 21600.0
    max_versions: int = Field(default=2000, ge=1)
    max_fingerprints: int = Field(default=500, ge=1)
    # How often (wall clock) the per-version slots are written to the state directory (and at
    # shutdown), so a restarted worker goes on with a running canary; 0 keeps them in memory only.
    persist_interval: Duration = Field(default=30.0, ge=0)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)

    @model_validator(mode="after")
    def _windows_fit(self) -> DeploysConfig:
        for key, seconds in (
            ("verdict.window", self.verdict.window),
            ("health.long_window", self.health.long_window),
            ("health.short_window", self.health.short_window),
        ):
            if seconds > self.retention:
                raise ValueError(
                    f"deploys.{key} ({seconds:g}s) exceeds deploys.retention ({self.retention:g}s)"
                )
        if self.slot <= 0 or self.slot > self.retention:
            raise ValueError("deploys.slot must be positive and at most deploys.retention")
        return self
