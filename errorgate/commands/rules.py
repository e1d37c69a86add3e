"""``errorgate rules audit`` and ``errorgate rules test``: the redaction policy for reviewers.

``audit`` lists packs, recognizers, thresholds, actions, key policy, the regimes each pack
serves and the gaps (entity types a regime requires that nothing detects). ``test`` runs the
policy over sample telemetry (OTLP/JSON or plain lines) and shows each finding with its rule
and score; values are shown only as their shape unless ``--show-values`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from errorgate.config import ConfigError, load_config


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rules = subparsers.add_parser(
        "rules",
        help="inspect and try the redaction policy",
        description="Inspect and try the redaction policy.",
    )
    sub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser(
        "audit",
        help="the active redaction policy and its gaps",
        description="Print every recognizer, threshold, action and key rule of the redact processor(s), "
        "the regimes each pack serves, and gaps: entity types a regime requires that nothing detects.",
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--config", metavar="FILE", help="config file (default: the embedded default config)")
    p.add_argument(
        "--scan",
        metavar="FILE",
        action="append",
        default=[],
        help="OTLP/JSON lines (file exporter output, exports from a backend) to search for enc:v1 values, "
        "whose service is not bound, to re-encrypt; repeatable",
    )
    p.set_defaults(func=_audit)

    p = sub.add_parser(
        "test",
        help="show what the policy redacts in sample telemetry",
        description="Run the redaction policy over OTLP/JSON (traces, logs or metrics) or plain text lines "
        "(each line is a log body) and show what would be redacted and why. Values are printed as "
        "their shape (letters x, digits 9) unless --show-values is given.",
    )
    p.add_argument("file", metavar="FILE", help="input file, or - for stdin")
    p.add_argument("--show-values", action="store_true", help="print the original values (may print PII)")
    p.add_argument("--config", metavar="FILE", help="config file whose redact settings to use")
    p.set_defaults(func=_test)


# ----------------------------------------------------------------- shared


def _redact_configs(config_file: str | None) -> list[tuple[str, Any]]:
    from errorgate.processors.redact import RedactConfig

    config = load_config(config_file)
    found = [(cid, cfg) for cid, cfg in config.processors.items() if isinstance(cfg, RedactConfig)]
    return found or [("redact", RedactConfig())]


class _EphemeralKeyring:
    """Stands in for the gateway keyring in ``rules test`` so keyed actions show their shape
    without touching real keys: a random key per run, so outputs do not match production."""

    def __init__(self) -> None:
        self._key = os.urandom(32)

    def hmac_key(self, purpose: str) -> tuple[str, bytes]:
        return "ephemeral", hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()

    def encrypt_field(self, plaintext: str, *, key: str, signal: str, tenant: str, service: str) -> str:
        return "enc:v2:ephemeral:" + hmac.new(self._key, plaintext.encode(), hashlib.sha256).hexdigest()[:24]


# ----------------------------------------------------------------- audit


def audit_report(config_file: str | None) -> dict[str, Any]:
    from errorgate.processors.redaction.policy import available_packs, load_pack

    instances = []
    for component_id, cfg in _redact_configs(config_file):
        policy = cfg.effective_policy()
        from errorgate.processors.redaction.recognizers.registry import RECOGNIZER_ENTITIES

        thresholds = policy.thresholds()
        entities = sorted({e for r in policy.recognizers for e in RECOGNIZER_ENTITIES[r]})
        active = {p.name for p in policy.packs}
        gaps = policy.gaps()
        not_enabled = {}
        covered = policy.covered_entities()
        for name in available_packs():
            if name in active:
                continue
            pack = load_pack(name)
            for regime, needed in pack.requires.items():
                if regime not in gaps:
                    not_enabled[regime] = {"pack": name, "uncovered": sorted(set(needed) - covered)}
        instances.append(
            {
                "component": component_id,
                "score_threshold": policy.score_threshold,
                "packs": [
                    {"name": p.name, "description": p.description, "regimes": p.regimes, "source": p.source}
                    for p in policy.packs
                ],
                "recognizers": [
                    {
                        "name": r,
                        "entities": list(RECOGNIZER_ENTITIES[r]),
                        "threshold": {
                            e: thresholds.get(e, policy.score_threshold) for e in RECOGNIZER_ENTITIES[r]
                        },
                        "ner": r == "NameRecognizer",
                    }
                    for r in policy.recognizers
                    if cfg.ner or r != "NameRecognizer"
                ],
                "custom_recognizers": [
                    {
                        "name": c.name,
                        "entity": c.entity_type,
                        "patterns": [
                            {"name": p.name, "regex": p.regex, "score": p.score} for p in c.patterns
                        ],
                        "context": c.context,
                        "deny_list_entries": len(c.deny_list),  # the entries themselves may be sensitive
                    }
                    for c in policy.custom_recognizers
                ],
                "actions": {e: policy.action_for(e) for e in sorted(set(entities) | set(policy.entities))},
                "allow_keys": policy.allow_keys,
                "block_keys": policy.block_keys,
                "ip": cfg.ip.model_dump(),
                "ner": {"enabled": cfg.ner, "model": cfg.nlp_model, "free_text_keys": cfg.free_text_keys},
                "regimes": {
                    regime: {"gaps": missing, "covered": not missing}
                    for regime, missing in sorted(gaps.items())
                },
                "regimes_not_enabled": not_enabled,
            }
        )
    return {"redact": instances}


_RESOURCE_LISTS = ("resourceSpans", "resourceLogs", "resourceMetrics")


def _legacy_values(node: Any, key: str, found: dict[str, int]) -> None:
    """Count ``enc:v1:`` string values under ``node`` by attribute key (``log.body`` for bodies)."""
    if isinstance(node, dict):
        value = node.get("stringValue")
        if isinstance(value, str) and value.startswith("enc:v1:"):
            found[key] = found.get(key, 0) + 1
        for name, child in node.items():
            if name == "body":
                _legacy_values(child, "log.body", found)
            elif name == "value" and isinstance(node.get("key"), str):
                _legacy_values(child, node["key"], found)
            else:
                _legacy_values(child, key, found)
    elif isinstance(node, list):
        for child in node:
            _legacy_values(child, key, found)


def scan_legacy(paths: list[str]) -> list[dict[str, Any]]:
    """enc:v1 values per file, service and attribute key: what to re-encrypt as enc:v2."""
    counts: dict[tuple[str, str, str], int] = {}
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"--scan {path}: {e.strerror}") from None
        for line in text.splitlines():
            if "enc:v1:" not in line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                counts[(path, "?", "?")] = counts.get((path, "?", "?"), 0) + line.count("enc:v1:")
                continue
            for resource in (r for k in _RESOURCE_LISTS for r in doc.get(k, [])):
                attrs = resource.get("resource", {}).get("attributes", [])
                service = next(
                    (a["value"].get("stringValue", "") for a in attrs if a.get("key") == "service.name"), ""
                )
                found: dict[str, int] = {}
                _legacy_values(resource, "", found)
                for key, n in found.items():
                    counts[(path, service, key)] = counts.get((path, service, key), 0) + n
    return [{"file": f, "service": s, "key": k, "values": n} for (f, s, k), n in sorted(counts.items())]


def _audit(args: argparse.Namespace) -> int:
    report = audit_report(args.config)
    if args.scan:
        report["legacy_ciphertexts"] = scan_legacy(args.scan)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    if args.scan:
        legacy = report["legacy_ciphertexts"]
        print(
            f"== enc:v1 values (service not bound in the ciphertext; re-encrypt as enc:v2): {len(legacy)} groups"
        )
        for g in legacy:
            print(f"  {g['file']}: service {g['service'] or '(none)'} key {g['key']}: {g['values']}")
    for inst in report["redact"]:
        print(f"== {inst['component']}  (score threshold {inst['score_threshold']})")
        print("packs:")
        for p in inst["packs"]:
            print(f"  {p['name']:<8} regimes {','.join(p['regimes']) or '-':<6} {p['description']}")
        print("recognizers:")
        for r in inst["recognizers"]:
            th = ", ".join(f"{e}>={t}" for e, t in r["threshold"].items())
            print(f"  {r['name']:<32} {th}{'  (NER, free text only)' if r['ner'] else ''}")
        for c in inst["custom_recognizers"]:
            pats = "; ".join(f"{p['regex']} ({p['score']})" for p in c["patterns"]) or "-"
            print(
                f"  {c['name']:<32} {c['entity']} custom: {pats}; context {c['context']}; deny-list {c['deny_list_entries']}"
            )
        print("actions:")
        for e, a in inst["actions"].items():
            print(f"  {e:<24} {a}")
        print(f"allowed keys (never scanned): {', '.join(inst['allow_keys'])}")
        print(f"blocked keys (replaced unscanned): {', '.join(inst['block_keys'])}")
        ip = inst["ip"]
        print(
            f"IP addresses: redact={ip['redact']}, kept under {', '.join(ip['keep_keys'])}; "
            f"peer keys redacted on SERVER spans only: {', '.join(ip['server_peer_keys'])}"
        )
        print("regimes:")
        for regime, info in inst["regimes"].items():
            print(f"  {regime:<6} " + ("covered" if info["covered"] else f"GAPS: {', '.join(info['gaps'])}"))
        for regime, info in inst["regimes_not_enabled"].items():
            print(
                f"  {regime:<6} NOT ENABLED (pack {info['pack']}); uncovered: {', '.join(info['uncovered']) or 'none'}"
            )
    return 0


# ----------------------------------------------------------------- test


def _read_input(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


def _batches(text: str) -> list[Any]:
    from errorgate import attributes
    from errorgate.otlp.json_format import from_json
    from errorgate.signals import Batch, Signal

    stripped = text.lstrip()
    if stripped.startswith("{"):
        docs: list[str] = []
        try:
            json.loads(stripped)
            docs = [stripped]
        except json.JSONDecodeError:
            docs = [line for line in text.splitlines() if line.strip()]  # JSON lines
        out = []
        for doc in docs:
            keys = json.loads(doc).keys()
            signal = next(
                (
                    s
                    for s, k in (
                        (Signal.TRACES, "resourceSpans"),
                        (Signal.LOGS, "resourceLogs"),
                        (Signal.METRICS, "resourceMetrics"),
                    )
                    if k in keys or k.replace("resource", "resource_").lower() in keys
                ),
                None,
            )
            if signal is None:
                raise ConfigError("input: JSON without resourceSpans, resourceLogs or resourceMetrics")
            out.append(Batch.of(from_json(signal, doc)))
        return out
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    for line in text.splitlines():
        if line.strip():
            records.add().body.string_value = line
    attributes.set_value(req.resource_logs[0].resource.attributes, "service.name", "rules-test")
    return [Batch.of(req)]


def _test(args: argparse.Namespace) -> int:
    from errorgate.component import ComponentContext, Extensions
    from errorgate.extensions.keyring import KeyringExtension
    from errorgate.governance.keyring import Keyring
    from errorgate.processors.redact import RedactProcessor
    from errorgate.processors.redaction.explain import explain, shape
    from errorgate.telemetry import Telemetry

    batches = _batches(_read_input(args.file))
    component_id, cfg = _redact_configs(args.config)[0]
    cfg = cfg.model_copy(update={"workers": 0})
    with tempfile.TemporaryDirectory() as tmp:
        ctx = ComponentContext(
            component_id,
            Path(tmp),
            Telemetry(),
            logging.getLogger("errorgate.rules"),
            # Only the keyed actions' two calls are used: the stub stands in for the real keyring.
            Extensions({"keyring": KeyringExtension(cast(Keyring, _EphemeralKeyring()))}),
        )
        processor = RedactProcessor(cfg, ctx)
        totals: dict[str, int] = {}
        print(f"{'item':>4}  {'location':<32} {'entity':<20} {'rule':<44} {'score':>5}  value -> replacement")
        for b, batch in enumerate(batches):
            for row in explain(processor, batch):
                value = row.original if args.show_values else shape(row.original)
                score = "-" if row.score is None else f"{row.score:.2f}"
                item = "res" if row.item < 0 else str(row.item)
                prefix = f"{b}:" if len(batches) > 1 else ""
                print(
                    f"{prefix + item:>4}  {row.location[:32]:<32} {row.entity_type:<20} {row.rule[:44]:<44} {score:>5}  "
                    f"{value} -> {row.replacement}"
                )
                totals[row.entity_type] = totals.get(row.entity_type, 0) + 1
        processor.shutdown()
    summary = ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "nothing"
    print(f"would redact: {summary}")
    if not args.show_values:
        print("(values shown as their shape; --show-values prints them)")
    return 0
