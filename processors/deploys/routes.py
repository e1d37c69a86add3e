"""The HTTP answers of deploy verdicts and routing health (served on the metrics endpoint).

- ``GET /api/v1/verdict?service=S&candidate=V2&baseline=V1[&window=10m]`` → 200
  ``{"verdict", "evidence"}`` whatever the verdict (Argo Rollouts' ``web`` provider reads it
  with ``successCondition``/``failureCondition``); 400 names a missing or malformed parameter,
  404 an unknown service or version.
- ``POST /api/v1/verdict`` (a Flagger webhook): parameters from the query string or the
  payload's ``metadata``; candidate and baseline default to the service's newest version and
  the one before it. 200 on ``pass``, 412 otherwise (Flagger counts a non-2xx answer as a
  failed check, so ``inconclusive`` is retried until Flagger's own ``threshold``).
- A ``fail`` answered either way goes to the rollback trigger (``on_verdict``), which acts on it
  as on its own periodic check's (``deploys.rollback.asked_verdicts``).
- ``GET /api/v1/services/{name}/health`` → health+json, 200 for pass/warn, 503 for fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from errorgate.component import HttpAnswer, HttpQuery
from errorgate.config import parse_duration
from errorgate.processors.deploys.health import RoutingHealth
from errorgate.processors.deploys.settings import DeploysConfig
from errorgate.processors.deploys.store import VersionStore
from errorgate.processors.deploys.verdict import UnknownInputError, Verdict, VerdictInputError, judge

VERDICT_PATH = "/api/v1/verdict"
SERVICES_PATH = "/api/v1/services/"
ROUTES = frozenset({VERDICT_PATH, SERVICES_PATH})
HEALTH_JSON = "application/health+json"


class DeployRoutes:
    def __init__(self, config: DeploysConfig, store: VersionStore, slo_of: Callable[[str], float]) -> None:
        self.config = config
        self.store = store
        self.slo_of = slo_of
        self.health = RoutingHealth(config.health, store)
        # Hears every verdict answered (the rollback trigger, when enabled).
        self.on_verdict: Callable[[Verdict], None] | None = None

    def answer(self, query: HttpQuery) -> HttpAnswer:
        if query.path == VERDICT_PATH:
            return self._verdict(query)
        if query.path.startswith(SERVICES_PATH) and query.path.endswith("/health") and query.method == "GET":
            service = query.path[len(SERVICES_PATH) : -len("/health")]
            return self._health(service)
        return HttpAnswer(404, {"error": f"no route {query.method} {query.path}"})

    def _health(self, service: str) -> HttpAnswer:
        if not service or not self.store.versions(service):
            return HttpAnswer(
                404,
                {"status": "fail", "output": f"service {service!r} unknown: no telemetry seen"},
                HEALTH_JSON,
            )
        body = self.health.assess(service, self.slo_of(service))
        return HttpAnswer(503 if body["status"] == "fail" else 200, body, HEALTH_JSON)

    def _verdict(self, query: HttpQuery) -> HttpAnswer:
        flagger = query.method == "POST"
        params = dict(query.params)
        if flagger:
            try:
                payload = json.loads(query.body or b"{}")
                metadata = payload.get("metadata") or {} if isinstance(payload, dict) else {}
            except ValueError:
                return HttpAnswer(400, {"error": "request body: not JSON (a Flagger webhook payload)"})
            for key in ("service", "candidate", "baseline", "window"):
                if key not in params and isinstance(metadata.get(key), str):
                    params[key] = metadata[key]
        try:
            service, candidate, baseline, window = self._verdict_params(params, defaults=flagger)
            verdict = judge(self.store, self.config.verdict, service, candidate, baseline, window)
        except UnknownInputError as e:
            return HttpAnswer(404, {"error": str(e)})
        except VerdictInputError as e:
            return HttpAnswer(400, {"error": str(e)})
        if self.on_verdict is not None:
            self.on_verdict(verdict)
        status = (200 if verdict.verdict == "pass" else 412) if flagger else 200
        return HttpAnswer(status, verdict.as_json())

    def _verdict_params(self, params: Mapping[str, str], defaults: bool) -> tuple[str, str, str, float]:
        service = params.get("service", "")
        if not service:
            raise VerdictInputError("parameter 'service' is required")
        versions = self.store.versions(service)
        candidate, baseline = params.get("candidate", ""), params.get("baseline", "")
        if defaults and not candidate and versions:
            candidate = versions[-1]
        if defaults and not baseline and len(versions) > 1:
            baseline = [v for v in versions if v != candidate][-1]
        for name, value in (("candidate", candidate), ("baseline", baseline)):
            if not value and versions:
                raise VerdictInputError(f"parameter {name!r} is required")
        window = self.config.verdict.window
        if params.get("window"):
            try:
                window = parse_duration(params["window"])
            except (TypeError, ValueError):
                raise VerdictInputError(f"parameter 'window': not a duration: {params['window']!r}") from None
            if not 0 < window <= self.config.retention:
                raise VerdictInputError(
                    f"parameter 'window': {window:g}s is outside (0, deploys.retention = {self.config.retention:g}s]"
                )
        return service, candidate, baseline, window
