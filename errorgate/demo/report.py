"""The summary ``errorgate demo`` prints: what went in, what came out, error groups, what
sampling kept and what redaction removed. Reads the file exporter's OTLP/JSON output and
the gateway's own metrics, the same sources an operator would look at."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from errorgate import attributes
from errorgate.codec import BytesCodec, decode_line
from errorgate.signals import Signal, count_items, iter_log_records, iter_spans

if TYPE_CHECKING:
    from errorgate.service.gateway import Gateway


def _metric(gateway: Gateway, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in gateway.telemetry.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _sum_by(values: dict[tuple[tuple[str, str], ...], float], label: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for labels, v in values.items():
        c[dict(labels).get(label, "")] += int(v)
    return c


def read_output(out_dir: Path, codec: BytesCodec | None = None) -> dict[Signal, list[Any]]:
    """The file exporter's requests; ``codec`` opens lines it sealed at rest (the gateway's)."""
    from errorgate.otlp.json_format import from_json

    requests: dict[Signal, list[Any]] = {s: [] for s in Signal}
    for signal in Signal:
        for path in sorted(out_dir.glob(f"{signal.value}*.jsonl*")):
            for line in path.read_bytes().splitlines():
                if line.strip():
                    requests[signal].append(from_json(signal, decode_line(codec, line).decode("utf-8")))
    return requests


def print_report(sent: Counter[str], gateway: Gateway, out_dir: Path) -> None:
    out = read_output(out_dir, gateway.extensions.at_rest_codec())
    received = _sum_by(_metric(gateway, "errorgate_received_items_total"), "signal")
    exported = _sum_by(_metric(gateway, "errorgate_exported_items_total"), "signal")
    dropped = _metric(gateway, "errorgate_dropped_items_total")
    dead = _sum_by(_metric(gateway, "errorgate_dead_lettered_items_total"), "signal")
    print("\n== what went in and what came out ==")
    print(
        f"{'signal':<10}{'sent':>8}{'received':>10}{'exported':>10}{'dropped':>9}{'dead-lettered':>15}{'in files':>10}"
    )
    sent_key = {Signal.TRACES: "spans", Signal.LOGS: "logs", Signal.METRICS: "metric_points"}
    for signal in Signal:
        drop = sum(int(v) for labels, v in dropped.items() if dict(labels).get("signal") == signal.value)
        in_files = sum(count_items(r) for r in out[signal])
        print(
            f"{signal.value:<10}{sent[sent_key[signal]]:>8}{received[signal.value]:>10}{exported[signal.value]:>10}"
            f"{drop:>9}{dead[signal.value]:>15}{in_files:>10}"
        )
    reasons = Counter({f"{dict(k)['signal']}:{dict(k)['reason']}": int(v) for k, v in dropped.items() if v})
    if reasons:
        print("dropped by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))

    _print_error_groups(out)
    _print_sampling(gateway, out)
    _print_redaction(gateway, out)
    _print_retention(out)


def _items(out: dict[Signal, list[Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(signal, service, attributes) of every exported span and log record."""
    rows = []
    for req in out[Signal.TRACES]:
        for rs, _, span in iter_spans(req):
            svc = attributes.get_str(rs.resource.attributes, "service.name", "?")
            rows.append(("span", svc, attributes.to_dict(span.attributes)))
    for req in out[Signal.LOGS]:
        for rl, _, rec in iter_log_records(req):
            svc = attributes.get_str(rl.resource.attributes, "service.name", "?")
            rows.append(("log", svc, attributes.to_dict(rec.attributes)))
    return rows


def _print_error_groups(out: dict[Signal, list[Any]]) -> None:
    groups: dict[str, dict[str, Any]] = {}
    for _, svc, attrs in _items(out):
        fp = attrs.get("errorgate.error.fingerprint")
        if not fp:
            continue
        g = groups.setdefault(
            str(fp),
            {"service": svc, "count": 0, "kinds": Counter(), "severity": Counter(), "origin": Counter()},
        )
        g["count"] += 1
        g["template"] = attrs.get("errorgate.error.template", "")
        g["category"] = attrs.get("errorgate.error.category", "")
        g["kinds"][attrs.get("errorgate.error.kind", "?")] += 1
        g["severity"][attrs.get("errorgate.severity", "?")] += 1
        origin = attrs.get("errorgate.error.origin_service") or (
            svc if attrs.get("errorgate.error.origin") else ""
        )
        if origin:
            g["origin"][origin] += 1
    print("\n== error groups (exported items, by fingerprint) ==")
    if not groups:
        print("(no classified errors in the output: is the classify processor in the pipeline?)")
        return
    print(f"{'fingerprint':<18}{'service':<17}{'items':>6}  {'kinds':<28}{'sev':<5}{'origin':<20}template")
    for fp, g in sorted(groups.items(), key=lambda kv: -kv[1]["count"])[:12]:
        kinds = ",".join(f"{k}:{n}" for k, n in g["kinds"].most_common(3))
        sev = g["severity"].most_common(1)[0][0]
        origin = g["origin"].most_common(1)[0][0] if g["origin"] else "-"
        print(
            f"{fp[:16]:<18}{g['service']:<17}{g['count']:>6}  {kinds:<28}{sev:<5}{origin[:19]:<20}{str(g['template'])[:60]}"
        )


def _print_sampling(gateway: Gateway, out: dict[Signal, list[Any]]) -> None:
    sampled = _metric(gateway, "errorgate_sampled_items_total")
    if not sampled:
        return
    print("\n== sampling ==")
    by: dict[str, Counter[str]] = defaultdict(Counter)
    for labels, v in sampled.items():
        d = dict(labels)
        by[f"{d.get('signal')} {d.get('decision')}"][d.get("reason", "")] += int(v)
    for key, reasons in sorted(by.items()):
        print(f"{key:<16}" + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    adjusted = sum(float(a.get("errorgate.sampling.adjusted_count", 1) or 1) for _, _, a in _items(out))
    print(
        f"exported items stand for {adjusted:.0f} original items (sum of errorgate.sampling.adjusted_count)"
    )


def _print_redaction(gateway: Gateway, out: dict[Signal, list[Any]]) -> None:
    redactions = _metric(gateway, "errorgate_redactions_total")
    if not redactions:
        return
    print("\n== redaction ==")
    by_type = _sum_by(redactions, "entity_type")
    print("redacted values by type: " + ", ".join(f"{t} {n}" for t, n in by_type.most_common()))
    failures = sum(_metric(gateway, "errorgate_redaction_failures_total").values())
    print(f"fail-closed events: {int(failures)}")


def _print_retention(out: dict[Signal, list[Any]]) -> None:
    classes: Counter[str] = Counter(
        str(a.get("errorgate.retention.class"))
        for _, _, a in _items(out)
        if a.get("errorgate.retention.class")
    )
    if classes:
        print("\n== retention classes of exported items ==")
        print(", ".join(f"{c} {n}" for c, n in classes.most_common()))
