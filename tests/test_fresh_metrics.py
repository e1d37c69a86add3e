"""A fresh gateway (the embedded default config, nothing received yet) already exports every
metric the shipped alert rules query, and every counter of a known label set at 0 -- so the first
dead letter or failed redaction is an increase ``rate()`` sees, and panels show 0, not "No data"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from errorgate.config import default_config_text
from errorgate.receiver.common import REJECTION_REASONS
from errorgate.telemetry import DEAD_LETTER_REASONS
from tests.support.gateway import running_gateway

RULES = Path(__file__).resolve().parents[1] / "alert_rules"
_METRIC = re.compile(r"\b(errorgate_[A-Za-z0-9_:]+)\b(?!\s*\()")
_FAMILY_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value)


def alert_rule_metrics() -> dict[str, list[str]]:
    """Metric name -> the rule files whose PromQL uses it (Prometheus and Grafana rules)."""
    used: dict[str, list[str]] = {}
    files = sorted(RULES.glob("prometheus/*.yml")) + sorted(RULES.glob("grafana/*.yaml"))
    for path in files:
        for expr in _expressions(yaml.safe_load(path.read_text())):
            for name in _METRIC.findall(expr):
                used.setdefault(name, []).append(path.name)
    return used


def _family(sample_name: str) -> str:
    for suffix in _FAMILY_SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


@pytest.fixture(scope="module")
def fresh_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    """Family -> label sets of its samples, scraped from a gateway that has received nothing."""
    data = tmp_path_factory.mktemp("fresh")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERRORGATE_DATA_DIR", str(data))
        mp.delenv("ERRORGATE_KEYRING", raising=False)
        for var in ("ERRORGATE_GRPC_ENDPOINT", "ERRORGATE_HTTP_ENDPOINT", "ERRORGATE_METRICS_ENDPOINT"):
            mp.setenv(var, "127.0.0.1:0")
        with running_gateway(default_config_text()) as gateway:
            text = generate_latest(gateway.telemetry.registry).decode()
    families: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        samples = families.setdefault(family.name, [])
        samples.extend(s.labels for s in family.samples if not s.name.endswith("_created"))
    return families


def test_rule_files_name_the_metrics_they_alert_on() -> None:
    used = alert_rule_metrics()
    assert {"errorgate_dead_lettered_items_total", "errorgate_redaction_failures_total"} <= set(used)


def test_every_metric_an_alert_rule_queries_exists_on_a_fresh_gateway(
    fresh_metrics: dict[str, list[dict[str, str]]],
) -> None:
    missing = {
        name: files for name, files in alert_rule_metrics().items() if _family(name) not in fresh_metrics
    }
    assert missing == {}


def test_counters_of_known_label_sets_start_at_zero(fresh_metrics: dict[str, list[dict[str, str]]]) -> None:
    def has(family: str, **labels: str) -> bool:
        return any(all(s.get(k) == v for k, v in labels.items()) for s in fresh_metrics.get(family, []))

    signals = ("traces", "logs", "metrics")
    absent = [
        f"{family}{labels}"
        for family, labels in [
            *[("errorgate_dead_lettered_items", {"signal": s, "reason": r}) for s in signals for r in DEAD_LETTER_REASONS],
            *[("errorgate_redaction_failures", {"signal": s}) for s in signals],
            *[("errorgate_received_items", {"signal": s}) for s in signals],
            *[("errorgate_exported_items", {"signal": s, "exporter": "file"}) for s in signals],
            *[("errorgate_dropped_items", {"signal": s, "reason": "sampled"}) for s in ("traces", "logs")],
            *[("errorgate_dropped_items", {"signal": s, "reason": "rejected_by_backend"}) for s in signals],
            *[("errorgate_processor_failures", {"signal": "traces", "processor": p}) for p in ("classify", "sample", "redact", "encrypt", "retention")],
            ("errorgate_export_attempts", {"exporter": "file", "outcome": "retryable"}),
            *[("errorgate_rejected_requests", {"receiver": "otlp", "reason": r}) for r in REJECTION_REASONS],
        ]
        if not has(family, **labels)
    ]  # fmt: skip
    assert absent == []
    # A processor that does not run for a signal gets no series for it (sample: traces and logs).
    assert not has("errorgate_dropped_items", signal="metrics", reason="sampled")
