"""Detection on worker processes: identical output to in-process, and fail-closed on a real
timeout (a catastrophically backtracking custom regex), after which the pool recovers."""

from __future__ import annotations

import logging
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import generate_latest

from errorgate import attributes as A
from errorgate.component import ComponentContext
from errorgate.processors.redact import RedactConfig, RedactProcessor
from errorgate.signals import Batch
from errorgate.telemetry import Telemetry
from tests.redaction_corpus import build_corpus
from tests.test_redact_processor import trace_request


def make(tmp_path: Path, **settings: object) -> RedactProcessor:
    ctx = ComponentContext("redact", tmp_path, Telemetry(), logging.getLogger("test.redact"))
    return RedactProcessor(RedactConfig.model_validate(settings), ctx)


def corpus_request() -> ExportTraceServiceRequest:
    req = trace_request()
    spans = req.resource_spans[0].scope_spans[0].spans
    for i, sample in enumerate(build_corpus(120)):
        span = spans.add()
        span.name = f"op{i}"
        A.set_value(span.attributes, "exception.message" if sample.free_text else "detail", sample.text)
    return req


def test_pool_gives_the_same_result_as_in_process(tmp_path: Path) -> None:
    local = make(tmp_path, workers=0)
    pooled = make(tmp_path, workers=2, pool_min_batch=1, chunk_size=16)
    try:
        pool = pooled.detector.start_pool()
        assert pool is not None and pool.wait_ready(120)
        original = corpus_request()
        copy = ExportTraceServiceRequest()
        copy.CopyFrom(original)
        expected = local.process(Batch.of(original)).batches[0].request
        got = pooled.process(Batch.of(copy)).batches[0].request
        assert pooled.detector.cache.misses > 100
        assert pooled.detector._engine is None  # no in-process engine: every miss went to the workers
        assert got.SerializeToString() == expected.SerializeToString()
        spans = got.resource_spans[0].scope_spans[0].spans
        assert sum(A.get(s.attributes, "errorgate.redaction.count") or 0 for s in spans) > 50
    finally:
        pooled.shutdown()


def test_pool_timeout_fails_closed_and_the_pool_recovers(tmp_path: Path) -> None:
    pooled = make(
        tmp_path,
        workers=2,
        pool_min_batch=1,
        chunk_size=1,
        analysis_timeout="5s",  # generous: only the runaway value may miss it on a busy CI box
        ner=False,
        custom_recognizers=[
            {"name": "runaway", "entity_type": "RUNAWAY", "patterns": [{"regex": "(a|aa)+$", "score": 0.9}]}
        ],
    )
    try:
        pool = pooled.detector.start_pool()
        assert pool is not None and pool.wait_ready(120)
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        A.set_value(rs.resource.attributes, "service.name", "svc")
        ss = rs.scope_spans.add()
        hang = ss.spans.add()
        A.set_value(hang.attributes, "input", "a" * 40 + "!")
        A.set_value(hang.attributes, "user", "jane@example.com")
        ok = ss.spans.add()
        A.set_value(ok.attributes, "user", "bob@example.com")
        pooled.process(Batch.of(req))
        assert A.get(hang.attributes, "input") == "<REDACTION_FAILED>"
        assert A.get(hang.attributes, "user") == "<REDACTION_FAILED>"
        assert A.get(hang.attributes, "errorgate.redaction.failed") is True
        assert A.get(ok.attributes, "user") == "<EMAIL_ADDRESS>"
        text = generate_latest(pooled.context.telemetry.registry).decode()
        assert 'errorgate_redaction_failures_total{signal="traces"} 1.0' in text
        # The hung worker was replaced: the next batch is analysed normally.
        assert pool.wait_ready(120)
        req2 = ExportTraceServiceRequest()
        span = req2.resource_spans.add().scope_spans.add().spans.add()
        A.set_value(span.attributes, "user", "carol@example.com")
        pooled.process(Batch.of(req2))
        assert A.get(span.attributes, "user") == "<EMAIL_ADDRESS>"
    finally:
        pooled.shutdown()


_OWNER = """
import logging, sys, time
from pathlib import Path
from errorgate.component import ComponentContext
from errorgate.processors.redact import RedactConfig, RedactProcessor
from errorgate.telemetry import Telemetry

if __name__ == "__main__":
    ctx = ComponentContext("redact", Path(sys.argv[1]), Telemetry(), logging.getLogger("owner"))
    redact = RedactProcessor(RedactConfig.model_validate({"workers": 2, "pool_min_batch": 1}), ctx)
    pool = redact.detector.start_pool()
    assert pool is not None and pool.wait_ready(120)
    print(" ".join(str(pid) for pid in pool.executor._processes), flush=True)
    time.sleep(600)
"""


def test_pool_workers_exit_when_their_owner_is_killed(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) gives the owner no chance to stop its pool: the workers
    notice on their own and exit, instead of keeping their spaCy model in memory forever."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "owner.py"
    script.write_text(_OWNER)
    root = Path(__file__).resolve().parent.parent
    owner = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        assert owner.stdout is not None
        workers = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, 0)  # alive while the owner is
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 15
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in workers if _running(pid)]
        assert alive == [], "pool workers outlived their owner"
    finally:
        owner.kill()
        owner.wait(10)
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)  # a failed run must not leave them behind either


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its (gone) parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_start_returns_once_the_workers_are_ready(tmp_path: Path) -> None:
    """``start_workers: start`` (the default): the gateway opens its receivers after the
    processors' ``start``, so the workers' model loads must be over by then, not compete with
    the first seconds of traffic for the cores."""
    redact = make(tmp_path, workers=1)
    try:
        redact.start()
        pool = redact.detector.pool
        assert pool is not None and pool.ready()
    finally:
        redact.shutdown()
