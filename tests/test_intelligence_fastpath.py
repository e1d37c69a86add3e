"""The healthy fast paths of classify, sample and retention decide exactly as a full attribute decode
would: key text inside a value is only a false alarm, values of keys that matter are still read,
tags already on an item are replaced rather than duplicated."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.attributes import set_value, to_dict
from errorgate.component import PROCESSORS, ComponentContext, Processor
from errorgate.signals import Batch, Signal, iter_spans
from errorgate.telemetry import Telemetry
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
    total,
)

FP = "errorgate.error.fingerprint"


def make(name: str, tmp_path: Path, **settings: Any) -> Processor:
    factory = PROCESSORS.get(name)
    assert factory is not None
    context = ComponentContext(
        component_id=name, data_dir=tmp_path, telemetry=Telemetry(), logger=logging.getLogger("test")
    )
    return factory.create(factory.config_model.model_validate(settings), context)


def batch_of(*spans: S, **notes: Any) -> Batch:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    set_value(rs.resource.attributes, "service.name", spans[0].service)
    rs.scope_spans.add().spans.extend(s.proto() for s in spans)
    return Batch.of(request, notes=dict(notes))


def test_key_text_in_a_value_does_not_make_a_span_fail(tmp_path: Path) -> None:
    classify, telemetry = make_classify(tmp_path)
    decoy = S("shop", "GET /", 1, 1, kind=SERVER, attrs={"note": "http.response.status_code error.type"})
    ok = S("shop", "GET /", 2, 2, kind=SERVER, attrs={"http.response.status_code": 200})
    out = run(classify, batch_of(decoy, ok))
    assert FP not in out[(1, 1)] and FP not in out[(2, 2)]
    assert total(telemetry, "errorgate_errors_total") == 0
    assert total(telemetry, "errorgate_requests_total", service="shop") == 2


def test_status_values_are_still_read_on_the_fast_path(tmp_path: Path) -> None:
    classify, telemetry = make_classify(tmp_path)
    server_5xx = S("shop", "GET /", 1, 1, kind=SERVER, attrs={"http.response.status_code": 503})
    client_4xx = S("shop", "call", 2, 2, kind=CLIENT, attrs={"http.response.status_code": 404})
    server_4xx = S("shop", "GET /x", 3, 3, kind=SERVER, attrs={"http.response.status_code": 404})
    rpc_server = S("shop", "rpc", 4, 4, kind=SERVER, attrs={"rpc.grpc.status_code": 5})  # NOT_FOUND
    rpc_client = S(
        "shop", "rpc", 5, 5, kind=CLIENT, attrs={"rpc.grpc.status_code": 14, "peer.service": "inv"}
    )
    typed = S("shop", "work", 6, 6, kind=INTERNAL, attrs={"error.type": "TimeoutError"})
    ok_final = S("shop", "work", 7, 7, kind=INTERNAL, attrs={"error.type": "TimeoutError"})
    ok_proto = ok_final.proto()
    ok_proto.status.code = ok_proto.status.STATUS_CODE_OK  # an explicit OK is final
    b = batch_of(server_5xx, client_4xx, server_4xx, rpc_server, rpc_client, typed)
    b.request.resource_spans[0].scope_spans[0].spans.append(ok_proto)  # type: ignore[union-attr]
    out = run(classify, b)
    failing = {key for key, attrs in out.items() if FP in attrs}
    assert failing == {(1, 1), (2, 2), (5, 5), (6, 6)}
    assert out[(5, 5)]["errorgate.error.component"] == "inv"
    assert total(telemetry, "errorgate_errors_total") == 4


def test_client_peer_names_come_from_the_decoded_attributes(tmp_path: Path) -> None:
    classify, _ = make_classify(tmp_path)
    # One failing trace per peer form: the origin's component is the named callee (or none for an IP).
    spans = [
        S("web", "GET /", 1, 1, kind=SERVER, error=True, message="upstream failed"),
        S("web", "call", 1, 2, parent=1, kind=CLIENT, error=True, attrs={"server.address": "pay.internal"}),
        S("web", "GET /", 2, 3, kind=SERVER, error=True, message="upstream failed"),
        S("web", "call", 2, 4, parent=3, kind=CLIENT, error=True, attrs={"server.address": "10.1.2.3"}),
        S("web", "GET /", 3, 5, kind=SERVER, error=True, message="db failed"),
        S("web", "query", 3, 6, parent=5, kind=CLIENT, error=True, attrs={"db.system.name": "postgresql"}),
    ]
    out = run(classify, batch_of(*spans))
    assert out[(1, 1)]["errorgate.error.origin_service"] == "pay.internal"
    assert "errorgate.error.origin_service" not in out[(2, 3)]  # an IP is no name: the origin is web
    assert out[(3, 5)]["errorgate.error.origin_service"] == "postgresql"


def test_log_fast_path_reads_exception_attributes_not_bodies(tmp_path: Path) -> None:
    classify, _ = make_classify(tmp_path)
    records = [
        log("all fine", T0, severity=9),
        log("mentions exception.type in text", T0, severity=9),
        log("handled", T0, severity=9, **{"exception.type": "KeyError", "exception.message": "k"}),
        log("boom", T0, severity=17),
    ]
    out = run_logs(classify, log_batch("svc", records))
    assert [FP in attrs for attrs in out] == [False, False, True, True]


def _span_attrs(out_batches: list[Batch]) -> list[dict[str, Any]]:
    return [to_dict(s.attributes) for b in out_batches for _, _, s in iter_spans(b.request)]  # type: ignore[arg-type]


def test_sample_sees_fingerprints_set_upstream_but_not_their_text(tmp_path: Path) -> None:
    sample = make("sample", tmp_path, healthy_keep_probability=0.0)
    tagged = S("svc", "op", 1, 1, kind=SERVER, attrs={FP: "abc123"})  # status unset, fingerprinted
    decoy = S("svc", "op", 2, 2, kind=SERVER, attrs={"note": FP})  # only the key's text, as a value
    out = sample.process(batch_of(tagged, decoy, complete_traces=True))
    kept = _span_attrs(out.batches)
    assert [a.get(FP) for a in kept] == ["abc123"]
    assert out.dropped["sampled"] == 1


def test_retention_replaces_existing_tags_and_reads_classify_output(tmp_path: Path) -> None:
    retention = make("retention", tmp_path)
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    set_value(rs.resource.attributes, "service.name", "svc")
    plain, pre_tagged, failing, decoy = (Span(name=n, start_time_unix_nano=int(T0 * 1e9)) for n in "abcd")
    set_value(pre_tagged.attributes, "errorgate.retention.class", "audit-7y")
    set_value(pre_tagged.attributes, "errorgate.retention.days", 1)
    set_value(failing.attributes, "errorgate.severity", "P1")
    set_value(failing.attributes, FP, "f00")
    set_value(decoy.attributes, "note", "errorgate.severity errorgate.error.kind")
    rs.scope_spans.add().spans.extend([plain, pre_tagged, failing, decoy])
    out = retention.process(Batch(Signal.TRACES, request))
    spans = [s for b in out.batches for _, _, s in iter_spans(b.request)]  # type: ignore[arg-type]
    keys = [[kv.key for kv in s.attributes if kv.key.startswith("errorgate.retention")] for s in spans]
    assert all(sorted(k) == ["errorgate.retention.class", "errorgate.retention.days"] for k in keys)
    classes = [to_dict(s.attributes)["errorgate.retention.class"] for s in spans]
    assert classes[0] == classes[1] == classes[3]  # pre-existing tags replaced, decoy text ignored
    assert classes[2] != classes[0]  # a P1 error is kept longer than healthy items
    days = {c: to_dict(s.attributes)["errorgate.retention.days"] for c, s in zip(classes, spans, strict=True)}
    assert days[classes[2]] > days[classes[0]]
