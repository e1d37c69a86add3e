"""The embedded default config leaves nothing in clear under ``data_dir``: PII-laden spans, logs
and metrics, the backend down, the gateway SIGKILLed while it holds and queues them. Every byte
under the data directory (decompressed too, where a zstd or gzip stream is found) is searched for
the planted values; after a restart with the backend up everything arrives."""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import yaml
import zstandard

from errorgate.config import default_config_text
from errorgate.signals import Signal
from tests.support.gateway import GatewayProcess, free_port, metric_value, scrape
from tests.support.otlp_sink import OtlpSink
from tests.support.pii_traffic import ORDER_UUID, in_clear, send_pii_traffic

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def _decompressed(data: bytes) -> list[bytes]:
    """Every zstd / gzip stream found anywhere in ``data``, decompressed (best effort)."""
    out = []
    for magic, inflate in ((ZSTD_MAGIC, _unzstd), (GZIP_MAGIC, gzip.decompress)):
        at = data.find(magic)
        while at >= 0:
            try:
                out.append(inflate(data[at:]))
            except (zstandard.ZstdError, OSError, EOFError, zlib.error):
                pass
            at = data.find(magic, at + 1)
    return out


def _unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _in_clear(data: bytes) -> set[str]:
    """The planted PII found in ``data``, and the order id: business data that redaction keeps on
    purpose, and that still has no business lying readable on disk."""
    return set(in_clear(data)) | ({"order_id"} if ORDER_UUID.encode() in data else set())


def _leaks(root: Path) -> dict[str, list[str]]:
    """Planted values found in clear in any file under ``root`` (keys excluded: they are keys)."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "keys" in path.relative_to(root).parts:
            continue
        data = path.read_bytes()
        hits = _in_clear(data)
        for inner in _decompressed(data):
            hits |= {f"{h} (decompressed)" for h in _in_clear(inner)}
        if hits:
            found[str(path.relative_to(root))] = sorted(hits)
    return found


def _config(tmp: Path, sink: OtlpSink) -> Path:
    """The embedded default, with one OTLP backend added next to its file exporter (queued on
    disk under the data directory): everything else as shipped."""
    config = yaml.safe_load(default_config_text())
    config["exporters"]["otlp"] = {
        "endpoint": sink.grpc_endpoint,
        "tls": {"insecure": True},
        "timeout": "1s",
        "retry_on_failure": {"initial_interval": "50ms", "max_interval": "300ms", "max_elapsed_time": 0},
        "sending_queue": {"storage": str(tmp / "data" / "queue")},
    }
    for pipeline in config["service"]["pipelines"].values():
        pipeline["exporters"].append("otlp")
    path = tmp / "errorgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_with_backend_down_leaves_nothing_in_clear_and_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        "ERRORGATE_DATA_DIR": str(data),
        "ERRORGATE_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "ERRORGATE_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
        "ERRORGATE_METRICS_ENDPOINT": f"127.0.0.1:{metrics_port}",
        "ERRORGATE_KEYRING": "",  # the keyring the default config creates, not one from the caller
    }
    with OtlpSink() as sink:
        sink.stop()  # the backend is down from the start
        cfg = _config(tmp_path, sink)
        gw = GatewayProcess(cfg, grpc_port, metrics_port, env=env, stderr_file=tmp_path / "gw1.log")
        try:
            gw.start()
            sent = send_pii_traffic("grpc", gw.grpc_endpoint, f"127.0.0.1:{http_port}", "checkout")
            sent2 = send_pii_traffic("http", gw.grpc_endpoint, f"127.0.0.1:{http_port}", "billing")
            time.sleep(1.0)  # traces are held for the sampling decision: on disk now
            holding = _leaks(data)
            # Past the decision, released traces wait in the on-disk queue for the backend.
            metrics = f"127.0.0.1:{metrics_port}"
            _wait(
                lambda: metric_value(scrape(metrics), "errorgate_queue_items", exporter="otlp") >= 14,
                30,
                "everything queued for the backend that is down",
            )
            gw.kill()
        finally:
            gw.close()
        killed = _leaks(data)
        assert sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) > 1000
        assert (holding, killed) == ({}, {})
        assert any(p.name.startswith("traces.jsonl") for p in (data / "out").iterdir())

        sink.start()
        gw2 = GatewayProcess(cfg, grpc_port, metrics_port, env=env, stderr_file=tmp_path / "gw2.log")
        try:
            gw2.start()
            want = {
                Signal.TRACES: sent.spans + sent2.spans,
                Signal.LOGS: sent.log_records + sent2.log_records,
                Signal.METRICS: sent.points + sent2.points,
            }
            _wait(lambda: all(sink.item_count(s) >= n for s, n in want.items()), 40, "the queue to drain")
            assert gw2.terminate() == 0
        finally:
            gw2.close()
        assert {s: sink.item_count(s) for s in want} == want
        assert {len({sp.span_id for sp in sink.spans()})} == {want[Signal.TRACES]}
        assert _leaks(data) == {}
