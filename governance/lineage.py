"""Data lineage from a loaded config: what enters each pipeline, what touches it, where it goes.

Generated from the configuration the gateway actually runs (``errorgate.config.load_config``),
so the document cannot drift from the deployment. Known processor types are described
here; any component config model may add specifics by defining ``lineage() -> list[str]``.
Exporter settings are summarised by destination only: headers and credentials never
appear in the document.
"""

from __future__ import annotations

import json
from typing import Any

from errorgate.component import ComponentConfig
from errorgate.config import Config

FIELDS_IN: dict[str, list[str]] = {
    "traces": [
        "resource attributes (service.name, host, deployment, tenant...)",
        "scope name, version and attributes",
        "span name, kind, trace/span/parent ids, start/end time",
        "span attributes",
        "span events (name, attributes; exceptions: type, message, stacktrace)",
        "span links (trace/span ids, attributes)",
        "span status code and message",
    ],
    "logs": [
        "resource attributes (service.name, host, deployment, tenant...)",
        "scope name, version and attributes",
        "log record time, severity, trace/span ids",
        "log record body (string or structured)",
        "log record attributes",
    ],
    "metrics": [
        "resource attributes (service.name, host, deployment, tenant...)",
        "scope name, version and attributes",
        "metric name, description, unit",
        "data point values, timestamps and attributes, exemplars",
    ],
}

PROCESSOR_ROLES: dict[str, tuple[str, list[str]]] = {
    "classify": (
        "reads, adds",
        [
            "reads span status, exception events, log severity and body, http/rpc/db attributes, "
            "and the service catalog",
            "adds errorgate.error.* (fingerprint, template, kind, origin, domain, category), "
            "errorgate.severity and errorgate.itil.category",
        ],
    ),
    "sample": (
        "reads, drops, adds",
        [
            "reads errorgate.error.*, span status, durations, trace ids and configured attribute rules",
            "drops spans/log records of traces not sampled (counted in errorgate_dropped_items_total)",
            "adds errorgate.sampling.adjusted_count to every kept span and log record",
        ],
    ),
    "redact": (
        "reads, redacts, adds",
        [
            "scans every string leaving errorgate: resource, scope, span, event and link attributes "
            "(nested maps/arrays), span and event names, status messages, log bodies, data point attributes",
            "replaces detected values per its policy (mask, partial mask, keyed hash, token, encrypt) "
            "or drops the attribute; blocked keys are replaced without scanning",
            "adds errorgate.redaction.count and errorgate.redaction.types",
        ],
    ),
    "encrypt": (
        "encrypts",
        ["encrypts configured attribute keys to enc:v2 values (bound to tenant, service, signal and key)"],
    ),
    "retention": (
        "reads, adds",
        [
            "reads service, errorgate.severity and errorgate.error.* to pick a retention class",
            "adds errorgate.retention.class, errorgate.retention.days and errorgate.legal_hold "
            "to spans and log records (metric points pass untagged)",
        ],
    ),
}


def _component_lines(cfg: ComponentConfig) -> list[str]:
    try:
        return [str(line) for line in cfg.lineage()]
    except Exception:  # a describer bug must not break the document
        return ["(its lineage description failed to render)"]


def _describe_processor(component_id: str, cfg: Any) -> dict[str, Any]:
    type_name = component_id.split("/", 1)[0]
    role, lines = PROCESSOR_ROLES.get(
        type_name, ("unknown", ["no lineage description for this processor type"])
    )
    extra = _component_lines(cfg)
    # encrypt describes itself fully (its rules); others add specifics to the generic text.
    lines = extra if type_name == "encrypt" and extra else lines + extra
    if type_name == "redact":
        for attr in ("packs", "policy"):
            value = getattr(cfg, attr, None)
            if value:
                lines = [*lines, f"{attr}: {value if isinstance(value, str) else ', '.join(map(str, value))}"]
    return {"id": component_id, "type": type_name, "role": role, "description": lines}


def _describe_exporter(component_id: str, cfg: Any, data_dir: str, encrypted: bool) -> dict[str, Any]:
    type_name = component_id.split("/", 1)[0]
    if type_name == "otlp":
        protocol = getattr(cfg, "protocol", "grpc")
        tls = getattr(cfg, "tls", None)
        transport = "plaintext" if tls is not None and getattr(tls, "insecure", False) else "TLS"
        destination = f"OTLP/{protocol} to {getattr(cfg, 'endpoint', '?')} ({transport})"
    elif type_name == "file":
        destination = f"OTLP/JSON files under {getattr(cfg, 'path', '?')}"
    elif type_name == "debug":
        destination = "errorgate's own log (debug output)"
    else:
        destination = f"{type_name} exporter"
    queue = getattr(cfg, "sending_queue", None)
    if queue is not None and getattr(queue, "enabled", True) and getattr(queue, "storage", None):
        at_rest = "encrypted at rest (AES-256-GCM-SIV)" if encrypted else "NOT encrypted at rest"
        buffering = f"persistent queue at {queue.storage}, {at_rest}"
    elif queue is not None and getattr(queue, "enabled", True):
        buffering = "in-memory queue"
    else:
        buffering = "no queue"
    return {
        "id": component_id,
        "type": type_name,
        "destination": destination,
        "buffering": buffering,
        "details": _component_lines(cfg),
    }


def _retention(config: Config, component_id: str) -> dict[str, Any]:
    cfg = config.processors[component_id]
    try:
        from errorgate.processors.retention import load_policy

        policy = load_policy(getattr(cfg, "policy", None))
    except Exception as e:  # the gateway would refuse the same config; say so instead of failing
        return {"error": f"cannot load retention policy: {e}"}
    return {
        "default_class": policy.default_class,
        "legal_hold_class": policy.legal_hold_class,
        "classes": {name: c.days for name, c in policy.classes.items()},
        "rules": [
            {"name": r.name, "class": r.class_, "match": r.match.model_dump(exclude_none=True)}
            for r in policy.rules
        ],
        "legal_holds": [h.id for h in policy.legal_holds],
    }


def build_lineage(config: Config) -> dict[str, Any]:
    encrypt_ids = [cid for cid in config.processors if cid.split("/", 1)[0] == "encrypt"]
    encrypted = bool(encrypt_ids)
    data_dir = config.service.data_dir
    pipelines = []
    for name, p in config.service.pipelines.items():
        signal = name.split("/", 1)[0]
        retention_ids = [cid for cid in p.processors if cid.split("/", 1)[0] == "retention"]
        pipelines.append(
            {
                "name": name,
                "signal": signal,
                "receivers": list(p.receivers),
                "fields_in": FIELDS_IN[signal],
                "processors": [_describe_processor(cid, config.processors[cid]) for cid in p.processors],
                "exporters": [
                    _describe_exporter(cid, config.exporters[cid], data_dir, encrypted) for cid in p.exporters
                ],
                "retention": _retention(config, retention_ids[0]) if retention_ids else None,
                "unredacted": not any(cid.split("/", 1)[0] == "redact" for cid in p.processors),
            }
        )
    return {
        "source": config.source,
        "data_dir": data_dir,
        "at_rest": {
            "encrypted": encrypted,
            "covers": ["exporter queues", "dead-letter store", "held (tail-sampling) items"],
            "keyring": (getattr(config.processors[encrypt_ids[0]], "keyring", None) or f"{data_dir}/keys")
            if encrypted
            else None,
        },
        "pipelines": pipelines,
    }


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def render_markdown(doc: dict[str, Any]) -> str:
    at_rest = doc["at_rest"]
    out = [
        "# errorgate data lineage",
        "",
        f"Generated from `{doc['source']}`. Data directory: `{doc['data_dir']}`.",
        "",
        "At rest: "
        + (
            f"queues, dead letters and held items are encrypted with the keyring at `{at_rest['keyring']}`."
            if at_rest["encrypted"]
            else "**not encrypted** (no `encrypt` processor configured); queues and dead letters are plain."
        ),
    ]
    for p in doc["pipelines"]:
        out += ["", f"## Pipeline `{p['name']}` ({p['signal']})", ""]
        out.append(f"Receivers: {', '.join(f'`{r}`' for r in p['receivers'])}")
        out += ["", "### Fields that enter", ""]
        out += [f"- {f}" for f in p["fields_in"]]
        out += ["", "### Processors, in order", ""]
        if not p["processors"]:
            out.append("- none: telemetry is forwarded as received")
        for i, proc in enumerate(p["processors"], start=1):
            out.append(f"{i}. `{proc['id']}` ({proc['role']})")
            out += [f"   - {line}" for line in proc["description"]]
        if p["unredacted"]:
            out += ["", "> No `redact` processor: strings leave this pipeline unredacted."]
        out += ["", "### Exporters", ""]
        for e in p["exporters"]:
            out.append(f"- `{e['id']}`: {e['destination']}; {e['buffering']}")
            out += [f"  - {line}" for line in e["details"]]
        out += ["", "### Retention", ""]
        r = p["retention"]
        if r is None:
            out.append("- no `retention` processor: items carry no retention class")
        elif "error" in r:
            out.append(f"- {r['error']}")
        else:
            classes = ", ".join(f"`{n}` ({d} days)" for n, d in r["classes"].items())
            out.append(f"- classes: {classes}")
            out.append(
                f"- default class `{r['default_class']}`; legal holds move items to `{r['legal_hold_class']}`"
            )
            for rule in r["rules"]:
                match = ", ".join(f"{k}={v}" for k, v in rule["match"].items())
                out.append(f"- rule {rule['name'] or '(unnamed)'}: {match} -> `{rule['class']}`")
            if r["legal_holds"]:
                out.append(f"- legal holds: {', '.join(r['legal_holds'])}")
    return "\n".join(out) + "\n"
