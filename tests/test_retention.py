"""``retention``: longest class wins, legal holds, compliance scopes from the catalog, strict policy file."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from errorgate import attributes
from errorgate.component import PROCESSORS, ComponentContext, Extensions, Processor
from errorgate.config import ConfigError
from errorgate.extensions.catalog import CatalogExtension
from errorgate.governance.catalog import ServiceCatalog, ServiceEntry
from errorgate.processors.retention import load_policy
from errorgate.signals import Batch, Signal, iter_log_records, iter_spans
from errorgate.telemetry import Telemetry

NS = 1_000_000_000
T_2026_04 = datetime(2026, 4, 1, tzinfo=UTC).timestamp()


def make(
    tmp_path: Path,
    telemetry: Telemetry | None = None,
    extensions: Extensions | None = None,
    **cfg: object,
) -> Processor:
    factory = PROCESSORS.get("retention")
    assert factory is not None
    context = ComponentContext(
        component_id="retention",
        data_dir=tmp_path,
        telemetry=telemetry or Telemetry(),
        logger=logging.getLogger("t"),
        extensions=extensions or Extensions(),
    )
    return factory.create(factory.config_model.model_validate(cfg), context)


def span(service: str, *, error: bool = False, at: float = T_2026_04, **attrs: object) -> Batch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attributes.set_value(rs.resource.attributes, "service.name", service)
    s = rs.scope_spans.add().spans.add()
    s.trace_id, s.span_id, s.name = b"\x01" * 16, b"\x02" * 8, "op"
    s.start_time_unix_nano = int(at * NS)
    s.end_time_unix_nano = int(at * NS) + 1000
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    for k, v in attrs.items():
        attributes.set_value(s.attributes, k.replace("__", "."), v)  # type: ignore[arg-type]
    return Batch(Signal.TRACES, req)


def log(service: str, severity: int, at: float = T_2026_04, **attrs: object) -> Batch:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    attributes.set_value(rl.resource.attributes, "service.name", service)
    r = rl.scope_logs.add().log_records.add()
    r.severity_number = severity  # type: ignore[assignment]
    r.time_unix_nano = int(at * NS)
    for k, v in attrs.items():
        attributes.set_value(r.attributes, k.replace("__", "."), v)  # type: ignore[arg-type]
    return Batch(Signal.LOGS, req)


def tags(proc: Processor, batch: Batch) -> tuple[str, int, str | None]:
    (out,) = proc.process(batch).batches
    item: Span | LogRecord
    if out.signal is Signal.TRACES:
        ((_, _, item),) = list(iter_spans(out.request))  # type: ignore[arg-type]
    else:
        ((_, _, item),) = list(iter_log_records(out.request))  # type: ignore[arg-type]
    hold = attributes.get(item.attributes, "errorgate.legal_hold")
    return (
        attributes.get_str(item.attributes, "errorgate.retention.class"),
        attributes.get(item.attributes, "errorgate.retention.days"),  # type: ignore[return-value]
        hold,  # type: ignore[return-value]
    )


def test_bundled_policy_with_catalog_compliance_scopes(tmp_path: Path) -> None:
    proc = make(tmp_path)
    # checkout is pci + sox in the bundled catalog
    assert tags(proc, span("checkout")) == ("incident-400d", 400, None)
    # pci (400 d) and sox-error (7 y) both match: the longest wins
    assert tags(proc, span("checkout", error=True)) == ("audit-7y", 2555, None)
    # patient-records is hipaa: records that carried PII keep 6 years, others the default
    assert tags(proc, log("patient-records", 9, errorgate__redaction__count=2)) == ("phi-6y", 2190, None)
    assert tags(proc, log("patient-records", 9, errorgate__redaction__count=0)) == ("ops-30d", 30, None)
    assert tags(proc, log("catalog", 5)) == ("debug-7d", 7, None)
    assert tags(proc, log("catalog", 7)) == ("debug-7d", 7, None)  # DEBUG3 is still debug
    assert tags(proc, log("catalog", 9)) == ("ops-30d", 30, None)
    assert tags(proc, span("catalog", errorgate__severity="P1")) == ("incident-400d", 400, None)
    assert tags(proc, span("catalog", errorgate__error__kind="cascading")) == ("incident-400d", 400, None)
    assert tags(proc, span("catalog", errorgate__error__domain="security")) == ("audit-7y", 2555, None)
    assert tags(proc, span("never-heard-of-it")) == ("ops-30d", 30, None)
    # an ERROR log from a sox service counts as an error record
    assert tags(proc, log("orders-db-proxy", 17)) == ("audit-7y", 2555, None)


def test_gateway_catalog_is_used(tmp_path: Path) -> None:
    catalog = ServiceCatalog(services={"ledger": ServiceEntry(owner="fin", tier=1, compliance=["sox"])})
    proc = make(tmp_path, extensions=Extensions({"catalog": CatalogExtension(catalog)}))
    assert tags(proc, span("ledger", error=True)) == ("audit-7y", 2555, None)
    assert tags(proc, span("checkout", error=True)) == ("ops-30d", 30, None)  # not in this catalog


def test_catalog_path_setting(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text("services:\n  vault: {owner: sec, tier: 1, compliance: [pci]}\n")
    assert tags(make(tmp_path, catalog=str(path)), span("vault")) == ("incident-400d", 400, None)
    path.write_text("services:\n  vault: {owner: sec, tier: 9}\n")
    with pytest.raises(ConfigError, match=r"processors\.retention\.catalog: .*services\.vault\.tier"):
        make(tmp_path, catalog=str(path))


POLICY = """
default_class: short
legal_hold_class: hold
classes:
  short: {days: 7}
  mid: {days: 90}
  long: {days: 400}
  hold: {days: 3650}
rules:
  - {class: long, match: {service: [pay*]}}
  - {class: mid, match: {service: [payments], category: [timeout]}}
  - {class: mid, match: {attributes: {tenant: [acme]}}}
legal_holds:
  - id: LH-1
    match: {service: [payments]}
    start: 2026-03-01
    end: 2026-05-01T00:00:00Z
  - id: LH-2
    class: mid
    match: {attributes: {tenant: [acme]}}
    start: 2026-01-01T00:00:00Z
"""


def test_longest_wins_and_legal_hold_override_and_expiry(tmp_path: Path) -> None:
    path = tmp_path / "retention.yaml"
    path.write_text(POLICY)
    telemetry = Telemetry()
    proc = make(tmp_path, telemetry, policy=str(path))
    before, during, after = (
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 4, 30, tzinfo=UTC),
        datetime(2026, 5, 1, tzinfo=UTC),
    )
    # both pay* (400) and payments+timeout (90) match: 400 wins
    assert tags(proc, span("payments", at=before.timestamp(), errorgate__error__category="timeout")) == (
        "long",
        400,
        None,
    )
    assert tags(proc, span("payments", at=during.timestamp())) == ("hold", 3650, "LH-1")
    assert tags(proc, log("payments", 9, at=during.timestamp())) == ("hold", 3650, "LH-1")
    assert tags(proc, span("payments", at=after.timestamp())) == ("long", 400, None)  # end is exclusive
    assert tags(proc, span("orders", at=during.timestamp())) == ("short", 7, None)
    # a hold whose class is shorter than the computed one marks the item but never shortens retention
    assert tags(proc, span("payroll", at=during.timestamp(), tenant="acme")) == ("long", 400, "LH-2")
    assert tags(proc, span("orders", at=during.timestamp(), tenant="acme")) == ("mid", 90, "LH-2")
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
    }
    holds = {
        s.labels["hold"]: s.value
        for s in families["errorgate_legal_hold_items"].samples
        if s.name.endswith("_total")
    }
    assert holds == {"LH-1": 2, "LH-2": 2}
    classes = {
        (s.labels["signal"], s.labels["class"]): s.value
        for s in families["errorgate_retention_items"].samples
        if s.name.endswith("_total")
    }
    assert classes == {
        ("traces", "long"): 3,
        ("traces", "hold"): 1,
        ("logs", "hold"): 1,
        ("traces", "short"): 1,
        ("traces", "mid"): 1,
    }


def test_every_span_and_record_is_tagged_and_metrics_pass_untouched(tmp_path: Path) -> None:
    proc = make(tmp_path)
    b = span("checkout")
    rs = b.request.resource_spans[0]  # type: ignore[union-attr]
    rs.scope_spans[0].spans.add().name = "second"
    rs.scope_spans.add().spans.add().name = "third"
    (out,) = proc.process(b).batches
    assert [
        attributes.get(s.attributes, "errorgate.retention.days") for _, _, s in iter_spans(out.request)
    ] == [400] * 3  # type: ignore[arg-type]
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "x"
    m.gauge.data_points.add().as_double = 1.0
    before = req.SerializeToString()
    (mout,) = proc.process(Batch(Signal.METRICS, req)).batches
    assert mout.request.SerializeToString() == before


HEAD = "classes: {a: {days: 7}}\ndefault_class: a\nlegal_hold_class: a\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "classes: {a: {days: 7, dayz: 3}}\ndefault_class: a\nlegal_hold_class: a\n",
            "classes.a.dayz: unknown key",
        ),
        ("classes: {a: {days: 0}}\ndefault_class: a\nlegal_hold_class: a\n", "classes.a.days"),
        (
            "classes: {a: {days: 7}}\ndefault_class: b\nlegal_hold_class: a\n",
            "default_class: unknown class 'b'",
        ),
        (
            HEAD + "rules: [{class: zz, match: {pii: true}}]\n",
            "rules[0].class: unknown class 'zz'",
        ),
        (
            HEAD + "rules: [{class: a, match: {}}]\n",
            "rules.0.match: a matcher needs at least one condition",
        ),
        (
            HEAD + "rules: [{class: a, match: {compliance: [sux]}}]\n",
            "rules.0.match.compliance.0",
        ),
        (
            "classes: {a: {days: 7}}\ndefault_class: a\nlegal_hold_class: a\n"
            "legal_holds: [{id: X, match: {pii: true}, start: 2026-02-01, end: 2026-01-01}]\n",
            "legal_holds.0: end must be after start",
        ),
        (
            "classes: {a: {days: 7}}\ndefault_class: a\nlegal_hold_class: a\n"
            "legal_holds: [{id: X, match: {pii: true}, start: 2026-01-01},"
            " {id: X, match: {pii: false}, start: 2026-01-01}]\n",
            "legal_holds[1].id: duplicate hold id 'X'",
        ),
        ("classes: {a: {days: 7}}\ndefault_class: a\nlegal_hold_class: a\nrulez: []\n", "rulez: unknown key"),
        ("classes: [a\n", "not valid YAML"),
        ("- a\n", "top level must be a mapping"),
    ],
)
def test_policy_validation_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "retention.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_policy(path)
    assert expected in str(e.value)
    assert str(path) in str(e.value)


def test_bundled_policy_classes() -> None:
    policy = load_policy()
    assert {n: c.days for n, c in policy.classes.items()} == {
        "debug-7d": 7,
        "ops-30d": 30,
        "incident-400d": 400,
        "phi-6y": 2190,
        "audit-7y": 2555,
    }
    assert policy.default_class == "ops-30d"


def test_scope_wide_tagging_and_upstream_tags_replaced(tmp_path: Path) -> None:
    """Spans without errorgate attributes are tagged per scope (error or not); spans of a request
    already carrying our tags get them replaced, never duplicated."""
    proc = make(tmp_path)
    b = span("checkout")  # pci + sox: healthy 400 d, failing 7 y
    ss = b.request.resource_spans[0].scope_spans[0]  # type: ignore[union-attr]
    ss.spans.add().status.code = Status.STATUS_CODE_ERROR
    ss.spans.add().name = "third"
    (out,) = proc.process(b).batches
    spans = [s for _, _, s in iter_spans(out.request)]  # type: ignore[arg-type]
    assert [attributes.get(s.attributes, "errorgate.retention.days") for s in spans] == [400, 2555, 400]
    (again,) = proc.process(out).batches  # a second errorgate stage: replaced in place
    for s in iter_spans(again.request):  # type: ignore[arg-type]
        keys = [kv.key for kv in s[2].attributes]
        assert keys.count("errorgate.retention.class") == keys.count("errorgate.retention.days") == 1
    logs = log("catalog", 5)
    rl = logs.request.resource_logs[0]  # type: ignore[union-attr]
    rl.scope_logs[0].log_records.add().severity_number = 17  # type: ignore[assignment]
    rl.scope_logs[0].log_records.add().severity_number = 9  # type: ignore[assignment]
    (lout,) = proc.process(logs).batches
    assert [
        attributes.get(r.attributes, "errorgate.retention.class")
        for _, _, r in iter_log_records(lout.request)  # type: ignore[arg-type]
    ] == ["debug-7d", "ops-30d", "ops-30d"]


@pytest.mark.parametrize("signal", ["traces", "logs"])
def test_per_scope_and_per_item_shortcuts_match_the_exact_path(tmp_path: Path, signal: str) -> None:
    """Scopes of mixed items — plain, failing, with wanted attributes (classify's tags), with our
    tags from an upstream stage, wanted keys' text only in a value — get exactly the tags and
    counts that classifying every item on its own (the path taken with legal holds) gives."""
    import random

    def request(seed: int) -> ExportTraceServiceRequest | ExportLogsServiceRequest:
        rng = random.Random(seed)
        req = ExportTraceServiceRequest() if signal == "traces" else ExportLogsServiceRequest()
        for r in range(4):
            res = req.resource_spans.add() if signal == "traces" else req.resource_logs.add()  # type: ignore[union-attr]
            attributes.set_value(res.resource.attributes, "service.name", ["checkout", "catalog", "x"][r % 3])
            for _ in range(rng.randint(1, 3)):
                scope = res.scope_spans.add() if signal == "traces" else res.scope_logs.add()  # type: ignore[union-attr]
                for _ in range(rng.randint(0, 6)):
                    item = scope.spans.add() if signal == "traces" else scope.log_records.add()  # type: ignore[union-attr]
                    if signal == "traces":
                        item.status.code = rng.choice([0, 0, Status.STATUS_CODE_ERROR])
                    else:
                        item.severity_number = rng.choice([5, 9, 17])
                    pick = rng.random()
                    if pick < 0.2:
                        attributes.set_value(item.attributes, "errorgate.severity", rng.choice(["P1", "P3"]))
                        attributes.set_value(item.attributes, "errorgate.error.fingerprint", "fp")
                    elif pick < 0.3:
                        attributes.set_value(item.attributes, "errorgate.retention.class", "ops-30d")
                        attributes.set_value(item.attributes, "errorgate.retention.days", 30)
                    elif pick < 0.4:
                        attributes.set_value(item.attributes, "note", "errorgate.error.kind")
                    elif pick < 0.5:
                        attributes.set_value(item.attributes, "errorgate.sampling.adjusted_count", 10.0)
        return req

    def run(exact: bool) -> tuple[list[bytes], list[tuple[str, str, float]]]:
        telemetry = Telemetry()
        proc = make(tmp_path, telemetry)
        if exact:
            proc._per_scope = False  # type: ignore[attr-defined]  # every item classified on its own
        outs = []
        for seed in range(20):
            for b in proc.process(Batch(Signal(signal), request(seed))).batches:
                outs.append(b.request.SerializeToString(deterministic=True))
        samples = sorted(
            (s.name, repr(sorted(s.labels.items())), s.value)
            for f in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
            for s in f.samples
            if s.name.startswith("errorgate_retention") and not s.name.endswith("_created")
        )
        return outs, samples

    assert run(False) == run(True)
