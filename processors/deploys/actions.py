"""Rollback actions and Grafana annotations: their settings and the HTTP requests they make.

Each action is one request in the shape its vendor documents:

- ``webhook``: POST of errorgate's JSON (``payload``) to ``url``;
- ``github``: GitHub REST "Create a workflow dispatch event",
  ``POST {api_url}/repos/{repository}/actions/workflows/{workflow}/dispatches`` with
  ``{"ref", "inputs"}`` and ``Authorization: Bearer`` (``token_env``);
- ``gitlab``: "Trigger a pipeline with a token", ``POST {api_url}/projects/{project}/trigger/pipeline``
  with ``{"token", "ref", "variables"}`` (the trigger token is the credential; no header);
- ``argo_rollouts``: what ``kubectl argo rollouts abort`` does, a merge PATCH of the Rollout's
  ``status`` subresource with ``{"status": {"abort": true}}`` on the Kubernetes API.

String values may use ``{service}``, ``{candidate}`` and ``{baseline}``; other placeholders
are config errors. Tokens come from the environment (or a file) when the request is made, and
never appear in logs, audit records or dry-run reports.
"""

from __future__ import annotations

import json
import os
import string
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, Field, field_validator

from errorgate.component import ComponentConfig

PLACEHOLDERS = frozenset({"service", "candidate", "baseline"})
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _check_template(value: str) -> str:
    for _, name, _, _ in string.Formatter().parse(value):
        if name is not None and name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{name}}} (use {{service}}, {{candidate}}, {{baseline}})")
    return value


def _check_url(value: str) -> str:
    parsed = httpx.URL(value) if value.startswith(("http://", "https://")) else None
    if parsed is None or not parsed.host:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


Url = Annotated[str, AfterValidator(_check_url)]


class _Action(ComponentConfig):
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("*", mode="after")
    @classmethod
    def _templates(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _check_template(value)
        if isinstance(value, dict):
            for v in value.values():
                if isinstance(v, str):
                    _check_template(v)
        return value


class WebhookAction(_Action):
    kind: Literal["webhook"]
    url: Url
    headers: dict[str, str] = Field(default_factory=dict)
    token_env: str | None = None  # sent as Authorization: Bearer


class GithubAction(_Action):
    kind: Literal["github"]
    repository: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")  # owner/name
    workflow: str = Field(min_length=1)  # workflow id or file name, e.g. rollback.yml
    ref: str = Field(min_length=1)
    inputs: dict[str, str] = Field(
        default_factory=lambda: {
            "service": "{service}",
            "version": "{baseline}",
            "bad_version": "{candidate}",
        },
        max_length=10,  # GitHub accepts at most 10 inputs
    )
    token_env: str = "GITHUB_TOKEN"
    api_url: Url = "https://api.github.com"


class GitlabAction(_Action):
    kind: Literal["gitlab"]
    project: str = Field(min_length=1)  # numeric id or group/name (URL-encoded when sent)
    ref: str = Field(min_length=1)
    variables: dict[str, str] = Field(
        default_factory=lambda: {
            "ROLLBACK_SERVICE": "{service}",
            "ROLLBACK_TO": "{baseline}",
            "ROLLBACK_FROM": "{candidate}",
        }
    )
    token_env: str = "GITLAB_TRIGGER_TOKEN"
    api_url: Url = "https://gitlab.com/api/v4"


class ArgoRolloutsAction(_Action):
    kind: Literal["argo_rollouts"]
    rollout: str = "{service}"
    namespace: str = "default"
    api_url: Url = "https://kubernetes.default.svc"
    token_env: str | None = None  # else token_file (the pod's service-account token)
    token_file: str = SERVICE_ACCOUNT_TOKEN
    ca_file: str | None = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


Action = Annotated[
    WebhookAction | GithubAction | GitlabAction | ArgoRolloutsAction, Field(discriminator="kind")
]


class GrafanaAnnotation(ComponentConfig):
    url: Url  # Grafana's base URL
    token_env: str = "GRAFANA_TOKEN"  # a service-account token
    dashboard_uid: str | None = None  # None: an organization-wide annotation
    panel_id: int | None = None
    tags: list[str] = Field(default_factory=lambda: ["errorgate", "rollback"])
    timeout: float = Field(default=10.0, gt=0)


class IncidentTimeline(ComponentConfig):
    """errorgate's incident engine (``errorgate incidents serve``, or inside ``serve``)."""

    url: Url  # the engine's base URL, e.g. http://127.0.0.1:9466
    token_env: str = "ERRORGATE_INCIDENTS_TOKEN"  # the engine's API token (incidents.token_env)
    timeout: float = Field(default=10.0, gt=0)


class Request:
    """One HTTP request, described before it is made (a dry run reports it as it is)."""

    def __init__(
        self,
        method: str,
        url: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        secret: str | None,
        timeout: float,
        verify: str | bool = True,
        content_type: str = "application/json",
    ) -> None:
        self.method, self.url, self.body = method, url, dict(body)
        self.headers = {"Content-Type": content_type, **headers}
        self.secret = secret  # names where the token comes from; read when sent
        self.timeout, self.verify = timeout, verify

    def describe(self) -> dict[str, Any]:
        """For logs, audit and dry runs: no token (a GitLab trigger token lives in the body)."""
        body = {k: ("<redacted>" if k == "token" else v) for k, v in self.body.items()}
        return {"method": self.method, "url": self.url, "body": body}


def _fill(value: str, facts: Mapping[str, str]) -> str:
    return value.format_map(facts)


def _env(name: str) -> str:
    return os.environ.get(name, "")


def build(action: Any, facts: Mapping[str, str], payload: Mapping[str, Any]) -> Request:
    """The request ``action`` makes for a rollback of ``facts`` (service, candidate, baseline)."""
    if isinstance(action, WebhookAction):
        headers = {k: _fill(v, facts) for k, v in action.headers.items()}
        return Request("POST", _fill(action.url, facts), payload, headers, action.token_env, action.timeout)
    if isinstance(action, GithubAction):
        url = (
            f"{action.api_url}/repos/{action.repository}/actions/workflows/"
            f"{quote(_fill(action.workflow, facts), safe='')}/dispatches"
        )
        body = {
            "ref": _fill(action.ref, facts),
            "inputs": {k: _fill(v, facts) for k, v in action.inputs.items()},
        }
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        return Request("POST", url, body, headers, action.token_env, action.timeout)
    if isinstance(action, GitlabAction):
        url = f"{action.api_url}/projects/{quote(_fill(action.project, facts), safe='')}/trigger/pipeline"
        body = {
            "token": "",  # filled when sent
            "ref": _fill(action.ref, facts),
            "variables": {k: _fill(v, facts) for k, v in action.variables.items()},
        }
        return Request("POST", url, body, {}, None, action.timeout)
    assert isinstance(action, ArgoRolloutsAction)
    url = (
        f"{action.api_url}/apis/argoproj.io/v1alpha1/namespaces/{_fill(action.namespace, facts)}"
        f"/rollouts/{_fill(action.rollout, facts)}/status"
    )
    verify: str | bool = action.ca_file if action.ca_file and Path(action.ca_file).exists() else True
    return Request(
        "PATCH",
        url,
        {"status": {"abort": True}},
        {},
        action.token_env,
        action.timeout,
        verify,
        "application/merge-patch+json",
    )


def token_for(action: Any) -> str:
    """The credential ``action`` sends, read now (rotated tokens need no restart)."""
    if isinstance(action, GitlabAction):
        return _env(action.token_env)
    if isinstance(action, ArgoRolloutsAction) and not action.token_env:
        try:
            return Path(action.token_file).read_text().strip()
        except OSError:
            return ""
    env: str | None = action.token_env
    return _env(env) if env else ""


def annotation(config: GrafanaAnnotation, text: str, at: float) -> Request:
    """Grafana's "Create annotation": ``POST /api/annotations`` with time in epoch ms."""
    body: dict[str, Any] = {"time": int(at * 1000), "tags": list(config.tags), "text": text}
    if config.dashboard_uid:
        body["dashboardUID"] = config.dashboard_uid
    if config.panel_id is not None:
        body["panelId"] = config.panel_id
    return Request("POST", f"{config.url}/api/annotations", body, {}, config.token_env, config.timeout)


def timeline_event(config: IncidentTimeline, service: str, text: str) -> Request:
    """The engine's ``POST /api/v1/services/{service}/events``: a ``rollback`` event on the
    timeline of each open incident of the service (the engine groups incidents by service)."""
    url = f"{config.url}/api/v1/services/{quote(service, safe='')}/events"
    body = {"kind": "rollback", "text": text, "by": "errorgate-rollback"}
    return Request("POST", url, body, {}, config.token_env, config.timeout)


def send(request: Request, token: str, keep_reply: bool = False) -> dict[str, Any]:
    """Make ``request`` once; what happened, without the token (and the JSON reply, if asked:
    only for errorgate's own services, whose replies hold no secret)."""
    headers = dict(request.headers)
    body = dict(request.body)
    if "token" in body:
        body["token"] = token
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    started = time.monotonic()
    try:
        with httpx.Client(verify=request.verify, timeout=request.timeout) as http:
            r = http.request(request.method, request.url, content=json.dumps(body).encode(), headers=headers)
    except httpx.HTTPError as e:
        return {**request.describe(), "ok": False, "error": type(e).__name__}
    ok = 200 <= r.status_code < 300
    result = {
        **request.describe(),
        "ok": ok,
        "status": r.status_code,
        "seconds": round(time.monotonic() - started, 3),
    }
    if keep_reply:
        try:
            result["reply"] = r.json()
        except ValueError:
            result["reply"] = None
    return result
