"""The benchmark's traffic must look like real traffic to errorgate, or ``make bench`` flatters
it: unique trace ids whose low 56 bits (the W3C randomness ``sample`` reads) are spread, so a
10 % sampler keeps about 10 % of healthy traces, and template traces that stay whole."""

from __future__ import annotations

from collections import Counter

from bench.traffic import build_templates, patched
from errorgate.processors.sampling import consistent
from errorgate.signals import Signal


def _trace_ids(requests: int) -> list[list[bytes]]:
    """Per sent trace request, each span's trace id."""
    templates = [t for t in build_templates() if t.signal == "traces"]
    out = []
    for counter in range(requests):
        request = Signal.TRACES.parse(patched(templates[counter % len(templates)], (1 << 40) + counter))
        out.append([s.trace_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans])
    return out


def test_trace_ids_are_unique_per_trace_and_traces_stay_whole() -> None:
    per_request = _trace_ids(300)
    spans_per_trace = Counter(tid for ids in per_request for tid in ids)
    assert set(spans_per_trace.values()) == {5}  # 5-span template traces keep one id each
    assert len(spans_per_trace) == 300 * 10


def test_trace_id_randomness_gives_a_sampler_its_nominal_keep_share() -> None:
    threshold = consistent.threshold_for(0.1)
    traces = {tid for ids in _trace_ids(300) for tid in ids}
    kept = sum(consistent.randomness(tid) >= threshold for tid in traces)
    assert 0.07 < kept / len(traces) < 0.13


def test_unique_bodies_make_every_log_body_new_and_leave_the_default_traffic_alone() -> None:
    """``--soak`` sends log bodies never seen before (as ids in real messages make them), so the
    value caches fill as on real traffic; ``make bench``'s traffic is byte for byte as before."""
    plain = [t for t in build_templates() if t.signal == "logs"]
    assert all(not t.body_offsets for t in plain)
    templates = [t for t in build_templates(unique_bodies=True) if t.signal == "logs"]
    bodies = [
        r.body.string_value
        for counter in range(200)
        for rl in Signal.LOGS.parse(patched(templates[counter % 2], (1 << 40) + counter)).resource_logs  # type: ignore[union-attr]
        for sl in rl.scope_logs
        for r in sl.log_records
    ]
    assert len(bodies) == 200 * 30 and len(set(bodies)) == len(bodies)
