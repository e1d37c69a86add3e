"""End to end: planted PII and secrets never leave errorgate in clear.

One ``errorgate serve`` child process (the default processors, debug JSON logs on stderr, a
persistent queue, an OTLP sink as backend) gets PII in every OTLP location over gRPC and HTTP,
plus invalid, malformed and oversize input and a processor that fails. Every place a value could
escape is then searched for the planted values: what the backend received, errorgate's own log
output, ``/metrics``, ``/readyz``, errors returned to clients, ``dlq list`` output, and the data
directory's files (queue, held traces, dead letters: encrypted at rest because ``encrypt`` is on).

The processor failure comes from a test-only processor (``pii_explode``) registered in the child
through ``sitecustomize`` on ``PYTHONPATH``: no product code is changed, and it runs first so the
failing batch still carries raw PII when it is dead-lettered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import generate_latest

from errorgate import attributes
from errorgate.processors.redact import FAILED_ATTR
from errorgate.processors.redaction.actions import FAILED_MASK
from errorgate.signals import Signal
from tests.support.gateway import (
    ROOT,
    GatewayProcess,
    free_port,
    gateway_yaml,
    metric_value,
    otlp_exporter_yaml,
    running_gateway,
    scrape,
)
from tests.support.otlp_sink import OtlpSink
from tests.support.pii_traffic import (
    DECOY_SPAN_ATTRIBUTES,
    NAMES,
    PLANTED,
    SERVICE_VERSION,
    Sent,
    grpc_export_traces,
    in_clear,
    raw_trace_request,
    send_pii_traffic,
)

PLUGIN = '''
"""Test-only: a processor that raises (with PII in the message) on spans named explode*."""
from errorgate.component import ComponentConfig, Output, Processor, register_processor
from errorgate.signals import Signal, iter_spans


class _Config(ComponentConfig):
    pass


class _Explode(Processor):
    def process(self, batch):
        if batch.signal is Signal.TRACES:
            for _, _, span in iter_spans(batch.request):
                if span.name.startswith("explode"):
                    raise RuntimeError("cannot process " + span.name + " " + span.status.message)
        return Output.of(batch)


@register_processor("pii_explode", _Config)
def _create(config, context):
    return _Explode()
'''

PROCESSORS = "[pii_explode, classify, sample, redact, encrypt, retention]"
DEFAULT_PROCESSORS = "[classify, sample, redact, encrypt, retention]"


def _config(data: Path, sink: str, grpc_port: int, http_port: int, metrics_port: int) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}", max_recv_msg_size_mib: 1}}
      http: {{endpoint: "127.0.0.1:{http_port}", max_request_body_size_mib: 1}}
processors:
  pii_explode: {{}}
  classify: {{}}
  sample: {{}}
  redact: {{}}
  encrypt: {{}}
  retention: {{}}
exporters:
  otlp:
    endpoint: {sink}
    tls: {{insecure: true}}
    timeout: 2s
    retry_on_failure: {{initial_interval: 50ms, max_interval: 300ms, max_elapsed_time: 0}}
    sending_queue: {{storage: {data}/queue, max_size_mib: 64}}
service:
  data_dir: {data}
  shutdown_timeout: 20s
  pipelines:
    traces:  {{receivers: [otlp], processors: {PROCESSORS}, exporters: [otlp]}}
    logs:    {{receivers: [otlp], processors: {DEFAULT_PROCESSORS}, exporters: [otlp]}}
    metrics: {{receivers: [otlp], processors: [redact], exporters: [otlp]}}
  telemetry:
    metrics: {{endpoint: "127.0.0.1:{metrics_port}"}}
    logs: {{level: debug, encoding: json}}
"""


@dataclass
class Run:
    sink: OtlpSink
    data: Path
    sent: list[Sent] = field(default_factory=list)
    client_errors: dict[str, str] = field(default_factory=dict)  # what each bad input got back
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # moment -> file -> bytes
    metrics: str = ""
    readyz: str = ""
    stderr: str = ""
    exit_code: int | None = None
    dlq_json: str = ""


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "keys" not in p.relative_to(root).parts
    }


def _http_post_raw(url: str, body: bytes, ctype: str = "application/x-protobuf") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _http_post(url: str, body: bytes, ctype: str = "application/x-protobuf") -> tuple[int, str]:
    status, raw = _http_post_raw(url, body, ctype)
    return status, raw.decode(errors="replace")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _bad_inputs(run: Run, grpc_endpoint: str, http_url: str) -> None:
    p = PLANTED
    zero = raw_trace_request(f"GET /u/{p['email']}", bytes(16), bytes(8), "invalid-ids")
    code, msg = grpc_export_traces(grpc_endpoint, zero.SerializeToString())
    assert code == grpc.StatusCode.OK and "rejected 1" in msg, (code, msg)
    run.client_errors["grpc invalid ids"] = msg
    # Not the same bytes: an identical re-send would be acknowledged as a duplicate.
    zero_http = raw_trace_request(f"POST /u/{p['email']}", bytes(16), bytes(8), "invalid-ids")
    status, raw = _http_post_raw(f"{http_url}/v1/traces", zero_http.SerializeToString())
    assert status == 200, (status, raw)
    msg = ExportTraceServiceResponse.FromString(raw).partial_success.error_message
    assert "rejected 1" in msg, msg
    run.client_errors["http invalid ids"] = msg

    long_value = raw_trace_request("long", b"\x07" * 16, b"\x08" * 8, "too-long")
    long_value.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="dump").value.string_value = (
        f"{p['email']} {p['ssn']} " * 3000
    )
    code, msg = grpc_export_traces(grpc_endpoint, long_value.SerializeToString())
    assert code == grpc.StatusCode.OK and "rejected 1" in msg, (code, msg)
    run.client_errors["grpc value too long"] = msg

    garbage = b"\x0a\xff\xff" + p["email"].encode() + p["card"].encode()
    code, msg = grpc_export_traces(grpc_endpoint, garbage)
    assert code != grpc.StatusCode.OK
    run.client_errors["grpc garbage"] = msg
    status, body = _http_post(f"{http_url}/v1/traces", garbage)
    assert status == 400, (status, body)
    run.client_errors["http garbage"] = body
    bad_json = json.dumps(
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": p["person"], "traceId": p["email"]}]}]}]}
    ).encode()
    status, body = _http_post(f"{http_url}/v1/traces", bad_json, "application/json")
    assert status == 400, (status, body)
    run.client_errors["http bad json"] = body

    big = raw_trace_request("big", b"\x11" * 16, b"\x22" * 8, "oversize")
    big.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="blob").value.string_value = (
        f"{p['email']} {p['card']} " * 40_000
    )
    code, msg = grpc_export_traces(grpc_endpoint, big.SerializeToString())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, msg)
    run.client_errors["grpc oversize"] = msg
    status, body = _http_post(f"{http_url}/v1/traces", big.SerializeToString())
    assert status == 413, (status, body)
    run.client_errors["http oversize"] = body

    boom = raw_trace_request(f"explode {p['email']}", b"\x33" * 16, b"\x44" * 8, "explodes")
    code, msg = grpc_export_traces(grpc_endpoint, boom.SerializeToString())
    assert code == grpc.StatusCode.INTERNAL, (code, msg)
    run.client_errors["grpc processor failure"] = msg


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("privacy")
    plugin_dir = tmp / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "sitecustomize.py").write_text(PLUGIN)
    data = tmp / "data"
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    http_url = f"http://127.0.0.1:{http_port}"
    env_path = os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with OtlpSink() as sink, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", env_path)
        cfg = tmp / "errorgate.yaml"
        cfg.write_text(_config(data, sink.grpc_endpoint, grpc_port, http_port, metrics_port))
        result = Run(sink=sink, data=data)
        gw = GatewayProcess(cfg, grpc_port, metrics_port)
        stderr_chunks: list[bytes] = []
        try:
            gw.start()
            assert gw.proc is not None and gw.proc.stderr is not None
            # Debug logging fills a pipe quickly: drain it all along, not only at the end.
            pipe = gw.proc.stderr
            drain = threading.Thread(target=lambda: stderr_chunks.extend(iter(lambda: pipe.read(4096), b"")))
            drain.start()

            grpc_ep, http_ep = gw.grpc_endpoint, f"127.0.0.1:{http_port}"
            result.sent.append(send_pii_traffic("grpc", grpc_ep, http_ep, "checkout-grpc"))
            result.sent.append(send_pii_traffic("http", grpc_ep, http_ep, "checkout-http"))
            _bad_inputs(result, grpc_ep, http_url)
            # Traces are held for the sampling decision (10 s): they are on disk now.
            result.snapshots["holding"] = _files(data)

            sink.stop()
            result.sent.append(send_pii_traffic("grpc", grpc_ep, http_ep, "checkout-queued"))
            _wait(
                lambda: metric_value(scrape(f"127.0.0.1:{metrics_port}"), "errorgate_queue_items") > 0,
                15,
                "items queued while the backend is down",
            )
            # An export attempt fails while the backend is down (its debug log line is checked below).
            _wait(
                lambda: (
                    metric_value(
                        scrape(f"127.0.0.1:{metrics_port}"),
                        "errorgate_export_attempts_total",
                        outcome="retryable",
                    )
                    > 0
                ),
                15,
                "a failed export attempt while the backend is down",
            )
            result.snapshots["backend down"] = _files(data)
            sink.start()
            _wait(lambda: sink.item_count(Signal.LOGS) >= 9, 30, "queued logs to reach the backend")

            result.metrics = scrape(f"127.0.0.1:{metrics_port}")
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5) as r:
                result.readyz = r.read().decode()
            result.exit_code = gw.terminate(timeout=60)
            drain.join(timeout=10)
            result.stderr = b"".join(stderr_chunks).decode(errors="replace")
            result.snapshots["stopped"] = _files(data)
            listing = subprocess.run(
                [sys.executable, "-m", "errorgate", "dlq", "list", "--config", str(cfg), "--format", "json"],
                cwd=ROOT,
                capture_output=True,
                timeout=60,
            )
            assert listing.returncode == 0, listing.stderr.decode()[-2000:]
            result.dlq_json = listing.stdout.decode() + listing.stderr.decode()
            yield result
        finally:
            gw.close()


# ---------------------------------------------------------------- the backend


def test_backend_receives_everything_sent_and_nothing_in_clear(run: Run) -> None:
    assert run.exit_code == 0
    # Error traces are kept whole; invalid/failed/oversize input never reaches the backend.
    # Delivery is at-least-once: a request the backend took just as it was stopped loses its
    # answer and is sent again, so an item may arrive twice; every item arrives, nothing else.
    spans = {(s.trace_id, s.span_id) for s in run.sink.spans()}
    logs = {r.SerializeToString() for r in run.sink.log_records()}
    points = {m.name.encode() + p.SerializeToString() for m, p in run.sink.metric_points()}
    assert len(spans) == sum(s.spans for s in run.sent)
    assert len(logs) == sum(s.log_records for s in run.sent)
    assert len(points) == sum(s.points for s in run.sent)
    # Names depend on NER and have their own tests below; every pattern-detected value is checked here.
    leaks = {
        f"{r.signal.value} #{i}": in_clear(r.request.SerializeToString(), ignore=NAMES)
        for i, r in enumerate(run.sink)
    }
    assert {k: v for k, v in leaks.items() if v} == {}
    # The one value encrypt's default rules cover arrives as ciphertext, not masked and not in clear.
    user_ids = [attributes.to_dict(s.attributes).get("user.id") for s in run.sink.spans()]
    user_ids = [u for u in user_ids if u is not None]
    assert len(user_ids) == len(run.sent)
    assert all(str(u).startswith("enc:v2:") for u in user_ids), user_ids


def test_decoys_survive_unchanged(run: Run) -> None:
    spans = run.sink.spans()
    sent_trace_ids = {t for s in run.sent for t in s.trace_ids}
    sent_span_ids = {i for s in run.sent for i in s.span_ids}
    assert {int.from_bytes(s.trace_id, "big") for s in spans} == sent_trace_ids
    assert {int.from_bytes(s.span_id, "big") for s in spans} == sent_span_ids
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == len(run.sent)
    for root in roots:
        got = attributes.to_dict(root.attributes)
        assert {k: got.get(k) for k in DECOY_SPAN_ATTRIBUTES} == DECOY_SPAN_ATTRIBUTES
    for req in run.sink._requests(Signal.TRACES):
        for rs in req.resource_spans:  # type: ignore[union-attr]
            assert attributes.get_str(rs.resource.attributes, "service.version") == SERVICE_VERSION
    for record in run.sink.log_records():
        got = attributes.to_dict(record.attributes)
        if "order.id" in got:
            assert got["order.id"] == DECOY_SPAN_ATTRIBUTES["order.id"]


def test_redaction_is_annotated(run: Run) -> None:
    for span in run.sink.spans():
        if span.name == "audit write":
            continue  # only its link carries PII; the link is annotated through the span
        got = attributes.to_dict(span.attributes)
        assert _int(got.get("errorgate.redaction.count")) > 0, span.name
        types = set(str(got.get("errorgate.redaction.types", "")).split(","))
        assert types & {"EMAIL_ADDRESS", "CREDIT_CARD", "BLOCKED_KEY"}, (span.name, types)
    for record in run.sink.log_records():
        got = attributes.to_dict(record.attributes)
        assert _int(got.get("errorgate.redaction.count")) > 0


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _exception_events(run: Run) -> list[dict[str, Any]]:
    return [
        attributes.to_dict(e.attributes) for s in run.sink.spans() for e in s.events if e.name == "exception"
    ]


def test_names_in_log_bodies_are_redacted(run: Run) -> None:
    surname = PLANTED["person"].split()[-1]
    bodies = [str(r.body) for r in run.sink.log_records()]
    assert sum("<PERSON>" in b for b in bodies) == 2 * len(run.sent)  # string body and kvlist message
    assert [b for b in bodies if surname in b] == []


def test_error_template_carries_no_name(run: Run) -> None:
    items: list[Any] = [*run.sink.spans(), *run.sink.log_records()]
    templates = [
        str(attributes.to_dict(item.attributes).get("errorgate.error.template", "")) for item in items
    ]
    assert any(templates)
    assert [t for t in templates if in_clear(t)] == []


def test_names_in_status_and_exception_messages_are_redacted(run: Run) -> None:
    texts = [s.status.message for s in run.sink.spans()]
    texts += [str(a.get("exception.message", "")) for a in _exception_events(run)]
    assert [t for t in texts if in_clear(t)] == []


def test_names_in_stack_traces_are_redacted(run: Run) -> None:
    traces = [str(a.get("exception.stacktrace", "")) for a in _exception_events(run)]
    assert traces and [t for t in traces if in_clear(t)] == []


def test_exception_text_keeps_no_pattern_pii(run: Run) -> None:
    events = _exception_events(run)
    assert len(events) == len(run.sent)
    for event in events:
        assert "<EMAIL_ADDRESS>" in str(event["exception.message"])
        assert in_clear(str(event["exception.stacktrace"]), ignore=NAMES) == []


# ---------------------------------------------------------------- errorgate's own outputs


def test_own_logs_carry_no_pii_and_no_keys(run: Run) -> None:
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert any(line["level"] == "debug" for line in lines), "debug logging was not on"
    assert any(line.get("processor") == "pii_explode" for line in lines), "processor failure not logged"
    assert in_clear(run.stderr) == []
    key_material = [
        token
        for p in (run.data / "keys").rglob("*")
        if p.is_file()
        for token in re.findall(r"[A-Za-z0-9_\-+/]{20,}", p.read_bytes().decode(errors="replace"))
    ]
    assert key_material, "no keyring was created"
    assert [t for t in key_material if t in run.stderr] == []


def test_metrics_and_readiness_carry_no_pii(run: Run) -> None:
    assert metric_value(run.metrics, "errorgate_received_items_total", signal="traces") > 0
    assert metric_value(run.metrics, "errorgate_redactions_total") > 0
    assert in_clear(run.metrics) == []
    assert json.loads(run.readyz)
    assert in_clear(run.readyz) == []


def test_client_errors_name_the_problem_without_quoting_it(run: Run) -> None:
    assert set(run.client_errors) == {
        "grpc invalid ids",
        "http invalid ids",
        "grpc value too long",
        "grpc garbage",
        "http garbage",
        "http bad json",
        "grpc oversize",
        "http oversize",
        "grpc processor failure",
    }
    assert all(msg.strip() for msg in run.client_errors.values()), run.client_errors
    assert {k: in_clear(v) for k, v in run.client_errors.items() if in_clear(v)} == {}


def test_dead_letter_listing_is_metadata_only(run: Run) -> None:
    entries = json.loads(run.dlq_json[: run.dlq_json.rindex("]") + 1])
    reasons = sorted(e["reason"] for e in entries)
    assert reasons.count("invalid_item") == 3 and reasons.count("processor_error") == 1, reasons
    assert in_clear(run.dlq_json) == []


# ---------------------------------------------------------------- at rest


@pytest.mark.parametrize("moment", ["holding", "backend down", "stopped"])
def test_data_directory_holds_nothing_in_clear(run: Run, moment: str) -> None:
    files = run.snapshots[moment]
    assert sum(len(b) for b in files.values()) > 1000, f"nothing stored at {moment}: {sorted(files)}"
    assert {name: in_clear(b) for name, b in files.items() if in_clear(b)} == {}


# ---------------------------------------------------------------- fail closed


def test_redaction_engine_failure_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis engine breaks at run time: every scanned value is masked, nothing passes in
    clear, nothing is lost. (A missing model is refused at start-up instead: see below.) The
    fault is injected in this process, so the processors run here (no processor worker)."""
    from errorgate.processors.redaction.engine import AnalysisEngine

    def broken(self: object, items: object) -> object:
        raise RuntimeError("analysis engine crashed")

    monkeypatch.setattr(AnalysisEngine, "analyze_many", broken)
    processors = "{classify: {}, sample: {}, redact: {workers: 0}, encrypt: {}, retention: {}}"
    with OtlpSink() as sink:
        cfg = gateway_yaml(
            tmp_path / "data",
            exporter=otlp_exporter_yaml(sink.grpc_endpoint),
            processors=processors,
            pipeline_processors=DEFAULT_PROCESSORS,
            metrics_processors="[redact]",
            service_extra="  processor_worker: {enabled: false}",
        )
        with running_gateway(cfg) as gw:
            sent = send_pii_traffic("http", gw.grpc_endpoint, gw.http_endpoint, "fail-closed")
        metrics = generate_latest(gw.telemetry.registry).decode()
    assert sink.item_count(Signal.TRACES) == sent.spans
    assert sink.item_count(Signal.LOGS) == sent.log_records
    assert sink.item_count(Signal.METRICS) == sent.points
    for received in sink:
        request: Any = received.request.__class__()
        request.CopyFrom(received.request)
        assert in_clear(request.SerializeToString()) == [], received.signal
    assert {s.name for s in sink.spans()} == {FAILED_MASK}
    assert all(attributes.to_dict(s.attributes).get(FAILED_ATTR) is True for s in sink.spans())
    assert all(attributes.to_dict(r.attributes).get(FAILED_ATTR) is True for r in sink.log_records())
    for _, point in sink.metric_points():
        assert set(attributes.to_dict(point.attributes).values()) <= {FAILED_MASK, "/api/orders/{id}"}
    assert (
        metric_value(metrics, "errorgate_redaction_failures_total")
        == sent.spans + sent.log_records + sent.points
    )


def _drop_key(kvs: object, key: str) -> None:
    keep = [kv for kv in kvs if kv.key != key]  # type: ignore[attr-defined]
    del kvs[:]  # type: ignore[attr-defined]
    kvs.extend(keep)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- attribute keys


def test_pii_in_attribute_and_map_keys_is_redacted(tmp_path: Path) -> None:
    with OtlpSink() as sink:
        cfg = gateway_yaml(
            tmp_path / "data",
            exporter=otlp_exporter_yaml(sink.grpc_endpoint),
            processors="{redact: {workers: 0}}",
            pipeline_processors="[redact]",
        )
        with running_gateway(cfg) as gw:
            req = raw_trace_request("keyed", b"\x05" * 16, b"\x06" * 8, "pii-in-keys")
            span = req.resource_spans[0].scope_spans[0].spans[0]
            span.status.message = "keyed lookup failed"
            span.attributes.add(key=f"feature_flag.{PLANTED['email']}").value.string_value = "on"
            by_card = span.attributes.add(key="payments").value.kvlist_value.values.add(key=PLANTED["card"])
            by_card.value.string_value = "declined"
            code, _ = grpc_export_traces(gw.grpc_endpoint, req.SerializeToString())
            assert code == grpc.StatusCode.OK
            assert sink.wait_for(1, timeout=20)
    [received] = list(sink)
    # The values of the same span are redacted; only the keys carry PII.
    got = attributes.to_dict(sink.spans()[0].attributes)
    assert got["customer.contact"] == "<EMAIL_ADDRESS>"
    # "feature_flag.jane@…" is itself a valid address, so the whole key is the entity.
    assert got["<EMAIL_ADDRESS>"] == "on", "the key is redacted, the attribute kept"
    [(card_key, status)] = got["payments"].items()
    assert status == "declined" and card_key.endswith(PLANTED["card"][-4:]) and "*" in card_key
    assert in_clear(received.request.SerializeToString(), ignore=NAMES) == []


def test_missing_spacy_model_is_a_config_error() -> None:
    from errorgate.config import ConfigError, parse_config

    text = gateway_yaml(
        Path("/tmp/unused"),
        exporter=otlp_exporter_yaml("127.0.0.1:1"),
        processors="{redact: {nlp_model: no_such_spacy_model}}",
        pipeline_processors="[redact]",
    )
    with pytest.raises(
        ConfigError, match=r"processors\.redact\.nlp_model: .*no_such_spacy_model.*not installed"
    ):
        parse_config(text)
