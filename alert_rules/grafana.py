"""Grafana unified-alerting provisioning with the same rules and routing as Prometheus/Alertmanager.

``build_grafana_provisioning`` returns provisioning-API JSON shapes (for ``errorgate grafana push``);
``build_grafana_files`` the file-provisioning documents committed under ``alert_rules/grafana/``.
Differences from Alertmanager: Grafana (<= 12) has no inhibition, so the incident marker alert is
left out and ``errorgate alerts suppress`` creates the equivalent silences; contact points need
at least one integration, so there is no silent receiver either. Secrets are ``$__file{...}``
references, expanded by Grafana when it reads the files (``grafana push`` must expand them).
"""

from __future__ import annotations

import re
from typing import Any

from errorgate.alert_rules.alertmanager import (
    INCIDENT_ALERT,
    build_alertmanager_config,
    notification_template,
)
from errorgate.alert_rules.policy import Policy, load_policy, seconds
from errorgate.alert_rules.rules import AlertSpec, build_specs
from errorgate.governance.catalog import ServiceCatalog, load_catalog

ORG_ID = 1
TEMPLATE_NAME = "errorgate"
_MATCHER = re.compile(r'^(\w+)(=~|!~|!=|=)"(.*)"$')
_WINDOW = re.compile(r"\[(\d+[smhd])\]")
_NO_DATA = {"ok": "OK", "alerting": "Alerting", "nodata": "NoData"}


def _relative_from(expr: str) -> int:
    windows = [int(seconds(w)) for w in _WINDOW.findall(expr)]
    return max([600, *windows])


def _rule(spec: AlertSpec, policy: Policy) -> dict[str, Any]:
    ds = policy.grafana.datasource_uid
    severity = spec.labels["severity"]
    return {
        "uid": spec.uid,
        "title": f"{spec.alertname} {spec.key.rsplit('/', 1)[-1]}"
        + (f" {spec.labels['slo_window']}" if "slo_window" in spec.labels else ""),
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": _relative_from(spec.expr), "to": 0},
                "datasourceUid": ds,
                "model": {
                    "refId": "A",
                    "datasource": {"type": "prometheus", "uid": ds},
                    "expr": spec.expr,
                    "instant": True,
                    "range": False,
                },
            },
            {
                "refId": "B",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "B",
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                    "type": "reduce",
                    "expression": "A",
                    "reducer": "last",
                    "settings": {"mode": "dropNN"},
                },
            },
            {
                "refId": "C",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": "gt", "params": [spec.threshold]}}],
                },
            },
        ],
        "noDataState": _NO_DATA[spec.no_data],
        "execErrState": policy.grafana.exec_err_state,
        "for": spec.for_,
        "labels": dict(spec.labels),
        # Grafana's Opsgenie integration reads the priority from this annotation.
        "annotations": {"summary": spec.summary, "og_priority": policy.routing.opsgenie_priority[severity]},  # type: ignore[index]
        "isPaused": False,
    }


def _groups(specs: list[AlertSpec], policy: Policy) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        if spec.alertname != INCIDENT_ALERT:
            groups.setdefault(spec.group, []).append(_rule(spec, policy))
    interval = int(seconds(policy.evaluation_interval))
    return [
        {"title": name, "folderUid": policy.grafana.folder_uid, "interval": interval, "rules": rules}
        for name, rules in groups.items()
    ]


def _file_ref(path: str) -> str:
    return f"$__file{{{path}}}"


def _contact_points(am: dict[str, Any]) -> list[dict[str, Any]]:
    slack_url = _file_ref(am["global"]["slack_api_url_file"])
    points = []
    for receiver in am["receivers"]:
        name = receiver["name"]
        for cfg in receiver.get("pagerduty_configs", []):
            settings = {
                "integrationKey": _file_ref(cfg["routing_key_file"]),
                "severity": cfg["severity"],
                "summary": cfg["description"],
                "class": cfg["class"],
                "component": cfg["component"],
                "group": cfg["group"],
                "client": cfg["client"],
                "source": "errorgate",
            }
            points.append(_point(name, "pagerduty", settings))
        for cfg in receiver.get("opsgenie_configs", []):
            settings = {
                "apiKey": _file_ref(cfg["api_key_file"]),
                "message": cfg["message"],
                "description": cfg["description"],
                "autoClose": True,
                "overridePriority": True,
                "sendTagsAs": "tags",
                "responders": cfg["responders"],
            }
            points.append(_point(name, "opsgenie", settings))
        for cfg in receiver.get("slack_configs", []):
            settings = {
                "recipient": cfg["channel"],
                "url": slack_url,
                "title": cfg["title"],
                "text": cfg["text"],
            }
            points.append(_point(name, "slack", settings))
        for cfg in receiver.get("webhook_configs", []):
            points.append(_point(name, "webhook", _engine_webhook(cfg)))
    return points


def _engine_webhook(cfg: dict[str, Any]) -> dict[str, Any]:
    """The incident engine's webhook as Grafana sends it: to the engine's Grafana route (Grafana's
    body is not Alertmanager's v4), with the engine's API token in the ``Authorization`` header
    (Grafana's ``authorization_scheme``/``authorization_credentials``) read from the same file
    Alertmanager uses, or every notification would be refused with 401."""
    url = re.sub(r"/api/v1/alerts/alertmanager$", "/api/v1/alerts/grafana", cfg["url"])
    token_file = cfg["http_config"]["authorization"]["credentials_file"]
    return {"url": url, "httpMethod": "POST", "authorization_scheme": "Bearer",
            "authorization_credentials": _file_ref(token_file)}  # fmt: skip


def _point(name: str, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "uid": f"{name}-{kind}"[:40],
        "name": name,
        "type": kind,
        "settings": settings,
        "disableResolveMessage": False,
    }


def _route(route: dict[str, Any]) -> dict[str, Any] | None:
    if any(INCIDENT_ALERT in m for m in route.get("matchers", [])):
        return None
    out: dict[str, Any] = {"receiver": route["receiver"]}
    if "matchers" in route:
        out["object_matchers"] = [list(_MATCHER.match(m).groups()) for m in route["matchers"]]  # type: ignore[union-attr]
    for key in (
        "group_by",
        "group_wait",
        "group_interval",
        "repeat_interval",
        "mute_time_intervals",
        "continue",
    ):
        if key in route:
            out[key] = route[key]
    children = [r for r in (_route(c) for c in route.get("routes", [])) if r is not None]
    if children:
        out["routes"] = children
    return out


def build_grafana_provisioning(
    catalog_path: str | None = None, policy_path: str | None = None
) -> dict[str, Any]:
    """Provisioning-API shapes: rule groups, contact points, the policy tree, mute timings, templates."""
    catalog = load_catalog(catalog_path)
    policy = load_policy(policy_path)
    return _build(catalog, policy, build_specs(catalog, policy))


def _build(catalog: ServiceCatalog, policy: Policy, specs: list[AlertSpec]) -> dict[str, Any]:
    am = build_alertmanager_config(catalog, policy)
    policies = _route(am["route"])
    template = notification_template(policy).split("\n", 1)[1]  # drop the Alertmanager-only header
    return {
        "rule_groups": _groups(specs, policy),
        "contact_points": _contact_points(am),
        "policies": policies,
        "mute_timings": [
            {"name": t["name"], "time_intervals": t["time_intervals"]} for t in am["time_intervals"]
        ],
        "templates": [{"name": TEMPLATE_NAME, "template": template}],
    }


def build_grafana_files(
    catalog: ServiceCatalog, policy: Policy, specs: list[AlertSpec]
) -> dict[str, dict[str, Any]]:
    """File-provisioning documents (Grafana reads them from provisioning/alerting/)."""
    api = _build(catalog, policy, specs)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for point in api["contact_points"]:
        receiver = {k: point[k] for k in ("uid", "type", "settings", "disableResolveMessage")}
        by_name.setdefault(point["name"], []).append(receiver)
    return {
        "rules.yaml": {
            "apiVersion": 1,
            "groups": [
                {
                    "orgId": ORG_ID,
                    "name": g["title"],
                    "folder": policy.grafana.folder,
                    "interval": f"{g['interval']}s",
                    "rules": g["rules"],
                }
                for g in api["rule_groups"]
            ],
        },
        "contact-points.yaml": {
            "apiVersion": 1,
            "contactPoints": [{"orgId": ORG_ID, "name": n, "receivers": r} for n, r in by_name.items()],
        },
        "policies.yaml": {"apiVersion": 1, "policies": [{"orgId": ORG_ID, **api["policies"]}]},
        "mute-timings.yaml": {
            "apiVersion": 1,
            "muteTimes": [{"orgId": ORG_ID, **m} for m in api["mute_timings"]],
        },
        "templates.yaml": {"apiVersion": 1, "templates": [{"orgId": ORG_ID, **t} for t in api["templates"]]},
    }
