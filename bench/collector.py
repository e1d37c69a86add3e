"""The Go OpenTelemetry Collector (errorgate's distribution, ``make collector``) as benchmark
peer: its configs for the throughput rounds, and the free-text leak of its ``redaction``
processor on the held-out privacy corpus.

Peers, all OTLP/gRPC in and out like errorgate, the exporter's in-memory sending queue on
(its default), the same sink:
- ``otelcol``: no processors (the Collector's pass-through cost);
- ``otelcol-tailsampling``: ``tail_sampling`` keeping every trace with an error plus 10 % of the
  rest (errorgate's ``sample`` keeps error traces and samples the healthy rest), decision after
  1 s like the bench's errorgate profiles, then ``batch``: tail_sampling hands each kept trace
  on as its own request, which filled the exporter's sending queue (1000 requests) and had it
  reject kept traces; the batch processor docs place it after any sampling processor;
- ``otelcol-redaction``: the ``redaction`` processor with a regex set comparable to errorgate's
  pattern recognizers (emails, cards, phones, IBANs, IPs, SSNs, secrets), every key allowed.
  It only looks at attribute values (span, log record and resource attributes), not log bodies.

``python -m bench.collector heldout [dev|test] [N]`` prints the redaction leak."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS = ["otelcol", "otelcol-tailsampling", "otelcol-redaction"]

# A regex set comparable to errorgate's pattern recognizers (Go RE2 syntax: no lookaround).
BLOCKED_VALUES = [
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",  # email
    r"\b(?:\d[ -]?){12,18}\d\b",  # payment card (13-19 digits, spaces or dashes)
    r"\+?\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}",  # phone, international or national
    r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",  # IBAN
    r"\b(?:\d{1,3}\.){3}\d{1,3}\b",  # IPv4
    r"\b\d{3}-\d{2}-\d{4}\b",  # US SSN
    r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",  # JWT
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
    r"(?i)bearer\s+[A-Za-z0-9._~+/-]+=*",  # bearer token
    r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b",  # API keys
    r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{4}\b",  # dates (of birth)
]


def binary() -> Path:
    return Path(os.environ.get("ERRORGATE_OTELCOL") or ROOT / ".cache" / "otelcol" / "otelcol-errorgate")


def available() -> bool:
    return os.access(binary(), os.X_OK)


def _quoted(patterns: Sequence[str]) -> str:
    # YAML single quotes keep backslashes as they are.
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in patterns) + "]"


def config(peer: str, port: int, sink_port: int, health_port: int) -> str:
    processors = {
        "otelcol": ("", []),
        "otelcol-tailsampling": (
            """  tail_sampling:
    decision_wait: 1s
    num_traces: 200000
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: healthy-share, type: probabilistic, probabilistic: {sampling_percentage: 10}}
  batch: {}""",
            ["tail_sampling", "batch"],
        ),
        "otelcol-redaction": (
            f"""  redaction:
    allow_all_keys: true
    blocked_values: {_quoted(BLOCKED_VALUES)}
    summary: silent""",
            ["redaction"],
        ),
    }[peer]
    body, names = processors
    plist = ", ".join(names)
    # Only traces go through the sampler (and the batching after it, which it needs).
    logs_plist = ", ".join(n for n in names if n not in ("tail_sampling", "batch"))
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{port}, max_recv_msg_size_mib: 64}}
processors:
{body or "  {}"}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls: {{insecure: true}}
    compression: none
extensions:
  health_check: {{endpoint: 127.0.0.1:{health_port}}}
service:
  extensions: [health_check]
  telemetry:
    metrics: {{level: none}}
    logs: {{level: warn}}
  pipelines:
    traces: {{receivers: [otlp], processors: [{plist}], exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: [{logs_plist}], exporters: [otlp]}}
    metrics: {{receivers: [otlp], processors: [{logs_plist}], exporters: [otlp]}}
"""


def command(peer: str, port: int, sink_port: int, health_port: int, workdir: Path) -> list[str]:
    cfg = workdir / f"{peer}.yaml"
    cfg.write_text(config(peer, port, sink_port, health_port))
    return [str(binary()), "--config", str(cfg)]


def rejected_items(log: str) -> int:
    """Items the Collector's exporters rejected (``"rejected_items": N`` on each "Exporting failed"
    line of its log): data a peer acknowledged but never delivered, which its items/s must not
    hide."""
    return sum(int(n) for n in re.findall(r'"rejected_items": (\d+)', log))


def redact_texts(texts: Sequence[str]) -> list[str]:
    """Each text as a span attribute through the Collector's redaction processor; the values
    the sink receives, in order."""
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    from bench.procs import free_port, wait_port
    from errorgate.attributes import set_value, to_dict
    from tests.support.otlp_sink import OtlpSink

    with OtlpSink() as sink, tempfile.TemporaryDirectory(prefix="eg-otelcol-redact-") as tmp:
        port, health = free_port(), free_port()
        proc = subprocess.Popen(
            command("otelcol-redaction", port, sink.grpc_port, health, Path(tmp)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, 60)
            request = ExportTraceServiceRequest()
            spans = request.resource_spans.add().scope_spans.add().spans
            for i, text in enumerate(texts):
                span = spans.add(trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"))
                span.name = "heldout"
                set_value(span.attributes, "message", text)
                set_value(span.attributes, "i", i)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=ExportTraceServiceRequest.SerializeToString,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )(request, timeout=30)
            channel.close()
            if not sink.wait_for(len(texts), timeout=60):
                raise RuntimeError("the Collector did not deliver the held-out corpus")
            out: list[str] = [""] * len(texts)
            for s in sink.spans():
                a = to_dict(s.attributes)
                out[int(a["i"])] = str(a["message"])
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def heldout(splits: Sequence[str] = ("dev", "test"), n: int = 500) -> dict[str, Any]:
    """Leak per entity of the Collector's redaction processor on the held-out splits, scored as
    errorgate and Presidio are in bench.redaction (any 4+-character token left = a leak)."""
    from bench.heldout.corpus import build
    from bench.heldout.score import score

    out: dict[str, Any] = {}
    for split in splits:
        items = build(split, n)
        report = score(items, redact_texts([i.text for i in items]))
        print(report.line(f"{split} Collector redaction"))
        out[f"{split} Collector redaction"] = report.as_dict()
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "heldout":
        t0 = time.monotonic()
        heldout(
            [sys.argv[2]] if len(sys.argv) > 2 else ("dev", "test"),
            int(sys.argv[3]) if len(sys.argv) > 3 else 500,
        )
        print(f"({time.monotonic() - t0:.1f}s)")
