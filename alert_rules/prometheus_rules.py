"""Prometheus rule files (``alert_rules/prometheus/*.rules.yml``) from the alert specs."""

from __future__ import annotations

from typing import Any

from errorgate.alert_rules.policy import Policy
from errorgate.alert_rules.rules import AlertSpec

FAMILY_FILES = {
    "errors": "errorgate-errors.rules.yml",
    "slo": "errorgate-slo.rules.yml",
    "pipeline": "errorgate-pipeline.rules.yml",
}

# Unix seconds of the first error of the alerting service's current run of errors, read from
# classify's gauge (the earliest over replicas). Empty (so Prometheus drops the annotation)
# when the gauge is absent. Grafana's annotation templates cannot query, so this is
# Prometheus-only; the engine falls back to the alert's start then.
FIRST_ERROR_AT = (
    '{{ with printf "min(errorgate_first_error_timestamp_seconds{service=%q})" $labels.service | query }}'
    '{{ . | first | value | printf "%.0f" }}{{ end }}'
)


def _rule(spec: AlertSpec) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": spec.alertname, "expr": spec.expr}
    if spec.for_ not in ("0s", "0m", "0"):
        rule["for"] = spec.for_
    if spec.keep_firing_for not in ("0s", "0m", "0"):
        rule["keep_firing_for"] = spec.keep_firing_for
    rule["labels"] = dict(spec.labels)
    rule["annotations"] = {"summary": spec.summary}
    if spec.first_error:
        rule["annotations"]["first_error_at"] = FIRST_ERROR_AT
    return rule


def build_rule_files(specs: list[AlertSpec], policy: Policy) -> dict[str, dict[str, Any]]:
    """File name -> rule file document (``groups: [...]``)."""
    files: dict[str, dict[str, Any]] = {}
    for family, filename in FAMILY_FILES.items():
        groups: dict[str, list[dict[str, Any]]] = {}
        for spec in specs:
            if spec.family == family:
                groups.setdefault(spec.group, []).append(_rule(spec))
        files[filename] = {
            "groups": [
                {"name": name, "interval": policy.evaluation_interval, "rules": rules}
                for name, rules in groups.items()
            ]
        }
    return files
