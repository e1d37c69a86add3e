"""The byte-level shortcuts of classify decide exactly as a full attribute decode would.

Healthy spans are judged from their serialized bytes (a single detection key read in place,
peer names cached by the bytes after the end time); these tests build the adversarial cases —
key text and whole serialized attributes hidden inside other values, values of every type — and
check the outcome is what decoding every attribute gives."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from errorgate.attributes import to_dict
from errorgate.processors.classification.detect import detect_span
from errorgate.processors.classification.domain import db_system, peer_name
from errorgate.processors.classification.scan import SpanBytes
from errorgate.processors.classification.tags import SPAN_ATTRIBUTES, TagWriter
from errorgate.signals import WIRE_NOTE
from tests.test_classify_support import (
    CLIENT,
    INTERNAL,
    SERVER,
    T0,
    S,
    log,
    log_batch,
    make_classify,
    run,
    run_logs,
)
from tests.test_intelligence_fastpath import FP, batch_of


def record_bytes(key: str, value: object) -> bytes:
    """The serialized KeyValue ``key = value`` (a decoy carries it as a bytes value)."""
    kv = KeyValue(key=key)
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = str(value)
    return kv.SerializeToString()


def test_a_decoy_record_cannot_hide_a_real_failing_status(tmp_path: Path) -> None:
    classify, _ = make_classify(tmp_path)
    # The real old-style key says 500; a value carries the bytes of a new-style 200 that would
    # mask it if it were real. Two key texts: the fast path must not decide.
    masked = S(
        "shop",
        "GET /",
        1,
        1,
        kind=SERVER,
        attrs={"http.status_code": 500, "note": record_bytes("http.response.status_code", 200)},
    )
    # Only a decoy record that reads as failing: a false alarm, decoded and found healthy.
    decoy_fail = S(
        "shop", "GET /", 2, 2, kind=SERVER, attrs={"note": record_bytes("http.response.status_code", 503)}
    )
    # A decoy record that reads as healthy while no real detection key exists: healthy either way.
    decoy_ok = S("shop", "GET /", 3, 3, kind=SERVER, attrs={"note": record_bytes("rpc.grpc.status_code", 0)})
    checks = SpanBytes()
    for s, verdict in ((decoy_fail, False), (decoy_ok, True)):
        span = s.proto()
        data = span.SerializeToString()
        assert checks.surely_healthy(span, data, data.find(b"status_code"), -1) is verdict
    out = run(classify, batch_of(masked, decoy_fail, decoy_ok))
    assert FP in out[(1, 1)]
    assert FP not in out[(2, 2)] and FP not in out[(3, 3)]


def test_single_detection_keys_of_every_form(tmp_path: Path) -> None:
    cases = [
        (SERVER, {"http.response.status_code": 200}, False),
        (SERVER, {"http.response.status_code": 500}, True),
        (SERVER, {"http.response.status_code": 404}, False),
        (CLIENT, {"http.response.status_code": 404}, True),
        (SERVER, {"http.response.status_code": "503"}, True),  # a string status is still read
        (SERVER, {"http.status_code": 502}, True),
        (SERVER, {"rpc.grpc.status_code": 5}, False),  # NOT_FOUND is no server error
        (SERVER, {"rpc.grpc.status_code": 14}, True),
        (CLIENT, {"rpc.grpc.status_code": 5}, True),
        (SERVER, {"rpc.response.status_code": "UNAVAILABLE"}, True),
        (SERVER, {"rpc.status_code": "OK"}, False),
        (INTERNAL, {"error.type": "Timeout"}, True),
        (INTERNAL, {"error.type": ""}, False),
        (SERVER, {"http.response.status_code": 200, "x": "y" * 300}, False),  # long span
        (SERVER, {"http.response.status_code": "x" * 200}, False),  # a value too long to read in place
    ]
    checks = SpanBytes()
    for kind, attrs, failing in cases:
        for _ in range(2):  # the second time from the cache
            span = S("shop", "op", 1, 1, kind=kind, attrs=attrs).proto()
            data = span.SerializeToString()
            found = checks.surely_healthy(span, data, data.find(b"status_code"), data.find(b"error.type"))
            assert (detect_span(span) is not None) is failing, (kind, attrs)
            assert not (found and failing), (kind, attrs)  # "surely healthy" is never wrong
    classify, _ = make_classify(tmp_path)
    spans = [S("shop", "op", i + 1, i + 1, kind=k, attrs=a) for i, (k, a, _) in enumerate(cases)]
    out = run(classify, batch_of(*spans))
    assert [FP in out[(i + 1, i + 1)] for i in range(len(cases))] == [f for _, _, f in cases]


def test_status_and_events_without_detection_keys(tmp_path: Path) -> None:
    classify, _ = make_classify(tmp_path)
    two = S("shop", "work", 1, 1, kind=INTERNAL, attrs={"n": 2})  # int 2 encodes as ERROR's bytes
    failed = S("shop", "work", 2, 2, kind=INTERNAL, error=True)
    excepted = S("shop", "work", 3, 3, kind=INTERNAL, exception=("KeyError", "k", ""))
    other_event = S("shop", "work", 4, 4, kind=INTERNAL).proto()
    other_event.events.add(name="retry", time_unix_nano=int(T0 * 1e9))
    ok_with_exception = S("shop", "work", 5, 5, kind=INTERNAL, exception=("KeyError", "k", "")).proto()
    ok_with_exception.status.code = Status.STATUS_CODE_OK  # an explicit OK is final
    b = batch_of(two, failed, excepted)
    b.request.resource_spans[0].scope_spans[0].spans.extend([other_event, ok_with_exception])  # type: ignore[union-attr]
    out = run(classify, b)
    assert [FP in out[(n, n)] for n in range(1, 6)] == [False, True, True, False, False]


def full_peer(span: Span) -> str:
    attrs = to_dict(span.attributes)
    return peer_name(attrs) or db_system(attrs)


def test_peer_names_match_a_full_decode() -> None:
    decoy = record_bytes("server.address", "evil.example")
    cases: list[dict[str, object]] = [
        {"server.address": "pay.internal", "server.port": 443},
        {"peer.service": "inventory", "server.address": "inv.internal"},
        {"server.address": "10.1.2.3", "net.peer.name": "named.host"},  # an IP is no name
        {"server.address": "", "db.system": "postgresql"},
        {"db.system.name": "mysql", "db.system": "postgresql"},
        {"db.system": "redis"},
        {"note": decoy, "db.system": "postgresql"},  # a decoy record is no attribute
        {"note": decoy},
        {"server.address": "a.internal", "other": "server.address"},  # the key text twice
        {"server.address": 7},  # not a string
        {"messaging.destination.name": "orders", "rpc.service": "Orders"},
        {},
    ]
    checks = SpanBytes()
    for n, attrs in enumerate(cases * 2):  # twice: the second round comes from the caches
        span = S("web", "call", n + 1, n + 1, kind=CLIENT, attrs=attrs).proto()
        assert checks.peer(span, span.SerializeToString()) == full_peer(span), attrs


def test_repeated_spans_classify_like_the_first(tmp_path: Path) -> None:
    """Healthy spans are remembered by the bytes after their end time: a later span with the
    same bytes there is the same case; any difference (a status, an event, a value) is not."""
    classify, _ = make_classify(tmp_path)
    db = {"server.address": "orders-db", "db.system": "postgresql"}
    healthy = [S("web", "query", n, n, kind=CLIENT, attrs=db, end=T0 + n) for n in (1, 2)]
    failing = S("web", "query", 3, 3, kind=CLIENT, attrs=db, end=T0 + 3, error=True)
    excepted = S("web", "query", 4, 4, kind=CLIENT, attrs=db, end=T0 + 4, exception=("E", "m", ""))
    changed = S("web", "query", 5, 5, kind=CLIENT, attrs={**db, "error.type": "E"}, end=T0 + 5)
    server = S("web", "query", 6, 6, kind=SERVER, attrs=db, end=T0 + 6)  # another kind, same bytes after
    zero_end = S("web", "query", 7, 7, kind=CLIENT, attrs=db).proto()
    zero_end.end_time_unix_nano = 0
    b = batch_of(*healthy, failing, excepted, changed, server)
    b.request.resource_spans[0].scope_spans[0].spans.append(zero_end)  # type: ignore[union-attr]
    out = run(classify, b)
    assert [FP in out[(n, n)] for n in range(1, 8)] == [False, False, True, True, True, False, False]
    assert out[(3, 3)]["errorgate.error.component"] == "orders-db"
    again = run(
        classify, batch_of(*(S("web", "query", n, n, kind=CLIENT, attrs=db, end=T0 + n) for n in (8, 9)))
    )
    assert all(FP not in a for a in again.values())


def test_spans_sharing_the_bytes_after_the_end_time_share_their_attributes() -> None:
    """The peer cache's premise: serialization is canonical, so everything after the end time
    field (attributes, events, links, status, flags) parses back without ids, name or times."""
    span = S("web", "call", 1, 2, parent=3, kind=CLIENT, attrs={"server.address": "a", "n": 1}).proto()
    span.trace_state = "ot=th:8"
    span.dropped_attributes_count = 2
    span.events.add(name="e", time_unix_nano=5)
    span.links.add(trace_id=b"t" * 16, span_id=b"s" * 8)
    span.status.code = Status.STATUS_CODE_OK
    span.flags = 257
    data = span.SerializeToString()
    marker = bytes([0x41]) + span.end_time_unix_nano.to_bytes(8, "little")
    assert data.count(marker) == 1
    tail = Span.FromString(data[data.find(marker) + 9 :])
    assert list(tail.attributes) == list(span.attributes)
    assert (tail.trace_id, tail.span_id, tail.name, tail.end_time_unix_nano) == (b"", b"", "", 0)
    assert tail.status == span.status and list(tail.events) == list(span.events) and tail.flags == 257


def test_tags_replace_keys_already_present_and_append_the_rest() -> None:
    writer = TagWriter()
    for _ in range(2):
        span = Span()
        span.attributes.add(key="errorgate.error.kind", value=AnyValue(string_value="old"))
        span.attributes.add(key="a", value=AnyValue(int_value=1))
        tags = (("errorgate.error.fingerprint", "f"), ("errorgate.error.kind", "transient"), ("x", True))
        writer.write(span, SPAN_ATTRIBUTES, span.attributes, to_dict(span.attributes), tags)
        assert [kv.key for kv in span.attributes] == [
            "errorgate.error.kind",
            "a",
            "errorgate.error.fingerprint",
            "x",
        ]
        assert to_dict(span.attributes) == {
            "errorgate.error.kind": "transient",
            "a": 1,
            "errorgate.error.fingerprint": "f",
            "x": True,
        }
        fresh = Span()
        writer.write(fresh, SPAN_ATTRIBUTES, fresh.attributes, {}, tags)
        assert to_dict(fresh.attributes) == {
            "errorgate.error.fingerprint": "f",
            "errorgate.error.kind": "transient",
            "x": True,
        }


def test_grouping_memo_tells_attribute_types_apart(tmp_path: Path) -> None:
    classify, _ = make_classify(tmp_path)
    records = [
        log("queue failed", T0, **{"messaging.system": True}),
        log("queue failed", T0, **{"messaging.system": 1}),
        log("queue failed", T0, **{"messaging.system": "kafka"}),
        log("queue failed", T0, **{"messaging.system": "kafka", "tags": ["a"]}),  # unhashable value
    ]
    out = run_logs(classify, log_batch("svc", records))
    assert [a["errorgate.error.component"] for a in out] == ["True", "1", "kafka", "kafka"]
    assert len({a[FP] for a in out}) == 1


def test_log_records_checked_against_the_wire_bytes_the_pipeline_hands_over(tmp_path: Path) -> None:
    classify, _ = make_classify(tmp_path)
    assert classify.capabilities.reads_wire_note
    for records, failing in (
        ([log("fine", T0, severity=9), log("boom", T0, severity=17)], [False, True]),
        (
            [log("fine", T0, severity=9), log("handled", T0, severity=9, **{"exception.type": "KeyError"})],
            [False, True],
        ),
    ):
        batch = log_batch("svc", records)
        batch.notes[WIRE_NOTE] = batch.request.SerializeToString()
        out = run_logs(classify, batch)
        assert [FP in a for a in out] == failing
        assert WIRE_NOTE not in batch.notes  # void once tags changed the request


def test_tail_lookups_pause_where_spans_do_not_repeat() -> None:
    checks = SpanBytes()
    checks.tally(4096, 4096, 4096)  # everything repeats: keep looking
    assert checks.use_tails
    checks.tally(4096, 4096, 10)  # almost nothing repeats: pause
    assert not checks.use_tails
    checks.tally(60_000, 0, 0)
    assert not checks.use_tails
    checks.tally(60_000, 0, 0)  # the pause is over: try again
    assert checks.use_tails
