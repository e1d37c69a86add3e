"""What errorgate says about the shop: its /metrics (every item received is exported, dropped or
dead-lettered) and the classified spans the chaos gateway config writes as OTLP/JSON lines."""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

OUTCOMES = ("errorgate_exported_items", "errorgate_dropped_items", "errorgate_dead_lettered_items")


def item_counts(metrics_port: int) -> dict[str, dict[str, float]]:
    """Per signal: received and each outcome, summed over exporters and reasons."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        if family.name in ("errorgate_received_items", *OUTCOMES):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels.get("signal", "?")][family.name] += sample.value
    return {signal: dict(c) for signal, c in counts.items()}


def unbalanced(counts: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The signals whose received count is not exported + dropped + dead-lettered."""
    return {
        signal: c
        for signal, c in counts.items()
        if c.get("errorgate_received_items", 0) != sum(c.get(o, 0) for o in OUTCOMES)
    }


def _value(v: dict[str, Any]) -> object:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    return int(v["intValue"]) if "intValue" in v else None


def spans(data_dir: str, since_ns: int = 0) -> Iterator[tuple[str, str, dict[str, object]]]:
    """(service, span name, attributes) of each exported span that started at or after ``since_ns``."""
    path = Path(data_dir) / "out" / "traces.jsonl"
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        for rs in json.loads(line).get("resourceSpans", []):
            resource = {a["key"]: _value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    if int(s.get("startTimeUnixNano", 0)) >= since_ns:
                        attrs = {a["key"]: _value(a["value"]) for a in s.get("attributes", [])}
                        yield str(resource.get("service.name")), s["name"], attrs
