"""A replica killed mid-stream, its traces re-routed to the survivors, with the real Collector:

    SDK -> agent (loadbalancing, routing_key traceID, dns resolver) -> 3 errorgate replicas -> gateway -> sink

The replicas listen on 127.0.0.2/3/4 (one port), and the agent resolves one name to them
through a private /etc/hosts (``tests.support.hosts``: a mount namespace of its own, nothing
outside the test changes). The SDK streams traces; one replica is SIGKILLed and its address
leaves the answer, as an orchestrator removes a dead pod from a headless Service.

Two agent set-ups, because upstream's behaviour on a removed endpoint depends on where the
queue is (measured, not assumed):
- queue and retry on the loadbalancing exporter itself, per-endpoint exporters failing fast
  (``requeue=True``): failed batches are hashed again on each retry and land on the survivors;
- queue and retry per endpoint only (the usual static-resolver set-up): what was queued for
  the removed endpoint is flushed once to the dead address and dropped."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from errorgate.attributes import to_dict
from tests.support.gateway import metric_value
from tests.support.otelcol import otelcol_binary
from tests.support.topology import Topology
from tests.test_collector_topology import (
    SpanKey,
    key,
    received,
    replica_of_traces,
    sdk,
    send_traces,
    wait_keys,
    wait_taps,
)

DEAD = 1  # the replica the tests kill


@pytest.fixture(scope="module", autouse=True)
def _collector() -> None:
    otelcol_binary()  # builds once (make collector) or skips without Go


class Stream:
    """The SDK sending one 3-span trace every 20 ms from a thread, remembering when each trace
    (``cart.n`` = its index) started; and a clock noting when each span first reached the sink."""

    def __init__(self, topo: Topology) -> None:
        self.provider, self.exporter = sdk(topo.agent_endpoint, "cart")
        self.sink = topo.sink
        self.started: list[float] = []
        self.arrived: dict[SpanKey, float] = {}
        self._stop = threading.Event()
        self._clock_stop = threading.Event()
        self._threads = [threading.Thread(target=self._send), threading.Thread(target=self._clock)]

    def _send(self) -> None:
        tracer = self.provider.get_tracer("cart")
        while not self._stop.is_set():
            self.started.append(time.monotonic())
            send_traces(tracer, len(self.started) - 1, 1)
            time.sleep(0.02)

    def _clock(self) -> None:
        while True:
            stopping = self._clock_stop.is_set()  # read first: the last pass sees everything
            now = time.monotonic()
            for k in received(self.sink):
                self.arrived.setdefault(k, now)
            if stopping:
                return
            time.sleep(0.05)

    def __enter__(self) -> Stream:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._threads[0].join(timeout=30)
        self.provider.shutdown()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()
        self._clock_stop.set()
        self._threads[1].join(timeout=10)

    def trace_index(self, span: Any) -> int:
        return int(to_dict(span.attributes)["cart.n"])

    def started_after(self, t: float) -> int:
        """Index of the first trace started at or after monotonic time ``t``."""
        return next((i for i, s in enumerate(self.started) if s >= t), len(self.started))


def backends(topo: Topology) -> float:
    return metric_value(topo.agent_metrics(), "otelcol_loadbalancer_num_backends")


def kill_and_remove(topo: Topology, stream: Stream) -> tuple[float, float]:
    """Let the stream run on three replicas, SIGKILL one and drop it from the DNS answer;
    return (time of the kill, time the agent's hash ring had two backends)."""
    deadline = time.monotonic() + 30
    while len(stream.started) < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backends(topo) == 3
    t_kill = time.monotonic()
    topo.replicas[DEAD].kill()
    topo.remove_from_resolver(DEAD)
    while backends(topo) != 2:
        assert time.monotonic() < t_kill + 30, "the agent never dropped the dead replica"
        time.sleep(0.05)
    return t_kill, time.monotonic()


def test_killed_replica_traces_are_rerouted_to_the_survivors(tmp_path: Path) -> None:
    with Topology(tmp_path, replicas=3, processors=["classify"], resolver="dns", requeue=True) as topo:
        with Stream(topo) as stream:
            t_kill, t_ring = kill_and_remove(topo, stream)
            time.sleep(3)  # the stream goes on over two replicas
            stream.stop()
            after_kill = stream.started_after(t_kill)
            acked = stream.exporter.keys()
            assert stream.exporter.failed == 0
            # Everything sent after the kill reaches the backend through the survivors.
            late = acked & _keys_of_traces(stream, after_kill)
            assert not wait_keys(topo.sink, late, timeout=60)
            on_disk = wait_keys(topo.sink, acked, timeout=5)
            # What is still missing was acknowledged by the dead replica itself before the kill
            # (its disk queue and hold log); a replacement on its volume drains it.
            assert all(i < after_kill for i in _trace_indexes(stream, on_disk)), on_disk
            topo.restart_replica(DEAD)
            assert not wait_keys(topo.sink, acked, timeout=60)
            # A tap is an in-memory queue: the killed replica's tap loses what it had not sent
            # (the backend path has its disk queue), so only traces from before the kill may
            # be missing there.
            untapped = wait_taps(topo, acked, timeout=15)
            assert all(i < after_kill for i in _trace_indexes(stream, untapped)), untapped
        counts = received(topo.sink)
        assert set(counts) == acked  # every acknowledged span, at least once, nothing foreign
        report = _placement_report(topo, stream, after_kill, stream.started_after(t_ring))
        latency = {k: stream.arrived[k] - stream.started[i] for k, i in _index_of(stream, acked).items()}
        steady = _keys_of_traces(stream, 0) - _keys_of_traces(stream, stream.started_after(t_kill - 2))
        print(
            f"resolver dropped the dead replica after {t_ring - t_kill:.2f} s; "
            f"{len(acked)} spans acked, {sum(counts.values()) - len(counts)} duplicates at the backend; "
            f"{len(on_disk)} spans waited on the dead replica's disk; "
            f"spans started after the kill arrived within {max(latency[k] for k in late):.2f} s "
            f"(until 2 s before it within {max(latency[k] for k in steady):.2f} s); "
            f"failed requests to the dead replica: {_failed_to(topo, DEAD)}; {report}"
        )


def _keys_of_traces(stream: Stream, first: int) -> set[SpanKey]:
    """Acknowledged span keys of traces with index >= first (from what the SDK sent)."""
    return {
        (s.context.trace_id, s.context.span_id)  # type: ignore[union-attr]
        for s in stream.exporter.acked
        if int(s.attributes["cart.n"]) >= first  # type: ignore[index, arg-type]
    }


def _index_of(stream: Stream, keys: set[SpanKey]) -> dict[SpanKey, int]:
    return {
        (s.context.trace_id, s.context.span_id): int(s.attributes["cart.n"])  # type: ignore[union-attr, index, arg-type]
        for s in stream.exporter.acked
        if (s.context.trace_id, s.context.span_id) in keys  # type: ignore[union-attr]
    }


def _trace_indexes(stream: Stream, keys: set[SpanKey]) -> set[int]:
    return set(_index_of(stream, keys).values())


def _failed_to(topo: Topology, replica: int) -> float:
    endpoint = topo.replicas[replica].grpc_endpoint
    return metric_value(
        topo.agent_metrics(), "otelcol_loadbalancer_backend_outcome_total", endpoint=endpoint, success="false"
    )


def _placement_report(topo: Topology, stream: Stream, after_kill: int, after_ring: int) -> str:
    """Asserts where traces went; returns the figures for the report."""
    index_of_trace = {key(s)[0]: stream.trace_index(s) for tap in topo.taps for s in tap.spans()}
    placement = replica_of_traces(topo)
    survivors = {0, 1, 2} - {DEAD}
    late = {t: r for t, r in placement.items() if index_of_trace[t] >= after_kill}
    assert late and all(len(r) == 1 and r <= survivors for r in late.values()), late  # whole, on survivors
    settled = Counter(next(iter(r)) for t, r in late.items() if index_of_trace[t] >= after_ring)
    assert set(settled) == survivors, settled  # both survivors take new traces
    split = [t for t, r in placement.items() if len(r) > 1]
    assert all(index_of_trace[t] < after_kill for t in split)  # only traces the kill cut through
    return f"{len(late)} traces after the kill all whole on replicas {sorted(survivors)}; {len(split)} split by the kill"


def test_removed_endpoint_drops_what_its_own_queue_held(tmp_path: Path) -> None:
    """The documented failure mode, measured: with queue and retry per endpoint only, the
    agent acknowledges the dead replica's share into that endpoint's queue; when the resolver
    drops the endpoint its exporter is shut down, flushes once without retries, and the spans
    are gone (even after the dead replica's own disk is drained)."""
    with Topology(tmp_path, replicas=3, processors=["classify"], resolver="dns", requeue=False) as topo:
        with Stream(topo) as stream:
            t_kill, t_ring = kill_and_remove(topo, stream)
            time.sleep(3)
            stream.stop()
            acked = stream.exporter.keys()
            assert stream.exporter.failed == 0
            tapped_before = topo.taps[DEAD].item_count()
            topo.restart_replica(DEAD)  # drain the dead replica's own disk
            lost = wait_keys(topo.sink, acked, timeout=20)
            drained = topo.taps[DEAD].item_count() - tapped_before
        lost_traces = _trace_indexes(stream, lost)
        dropped_logged = sum(int(n) for n in re.findall(r'"dropped_items": (\d+)', topo.agent.log()))
        assert lost, "expected the removed endpoint's queue to be dropped"
        # Only traces sent while the dead replica was still in the ring (kill .. ring change).
        assert min(lost_traces) >= stream.started_after(t_kill - 1)
        assert max(lost_traces) < stream.started_after(t_ring + 1)
        assert dropped_logged > 0  # the only trace of it: an error line per dropped batch
        print(
            f"{len(lost)} of {len(acked)} acknowledged spans lost ({len(lost_traces)} traces, "
            f"{sum(i < stream.started_after(t_kill) for i in lost_traces)} of them started before the kill), sent in the {t_ring - t_kill:.2f} s between the kill and the "
            f"resolver's update; {dropped_logged} in 'Dropping data' log lines; the dead replica's disk drained {drained}"
        )
