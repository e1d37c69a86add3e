"""``ERROR_TRACES_NOTE``: classify leaves on each trace batch the ids of its failing traces.

A trace is failing when a span has status ERROR or carries ``errorgate.error.fingerprint``
after classify ran — fingerprints classify set and ones set upstream alike. ``sample`` reads
the note instead of searching the spans again, so it must be exactly that set."""

from __future__ import annotations

from pathlib import Path

from errorgate.attributes import has
from errorgate.signals import ERROR_TRACES_NOTE, WIRE_NOTE, Batch, iter_spans
from tests.test_classify_support import CLIENT, INTERNAL, SERVER, S, make_classify, tid, trace_batch

FINGERPRINT = "errorgate.error.fingerprint"


def failing_ids(batch: Batch) -> frozenset[bytes]:
    """The definition, from the spans themselves."""
    return frozenset(
        span.trace_id
        for _, _, span in iter_spans(batch.request)  # type: ignore[arg-type]
        if span.status.code == 2 or has(span.attributes, FINGERPRINT)
    )


def mixed() -> list[S]:
    return [
        S("shop", "GET /", 1, 1, kind=SERVER, attrs={"http.response.status_code": 200}),  # healthy
        S("shop", "GET /", 1, 2, parent=1, kind=CLIENT, attrs={"peer.service": "db"}),
        S("shop", "GET /", 2, 3, kind=SERVER, error=True, message="boom"),  # status ERROR
        S("shop", "GET /", 2, 4, parent=3, kind=INTERNAL),
        S("cart", "POST /", 3, 5, kind=SERVER, attrs={"http.response.status_code": 503}),  # detected
        S("cart", "GET /", 4, 6, kind=SERVER, attrs={FINGERPRINT: "abc"}),  # fingerprinted upstream
        S("cart", "GET /", 5, 7, kind=SERVER, attrs={"note": FINGERPRINT}),  # the text only: healthy
        S("cart", "GET /", 6, 8, kind=CLIENT, attrs={"http.response.status_code": 404}),  # client 4xx
    ]


def test_note_is_the_set_of_failing_traces(tmp_path: Path) -> None:
    classify, _ = make_classify(tmp_path)
    batch = trace_batch(mixed())
    out = classify.process(batch)
    assert out.batches == [batch]
    note = batch.notes[ERROR_TRACES_NOTE]
    assert isinstance(note, frozenset)
    assert note == failing_ids(batch) == {tid(2), tid(3), tid(4), tid(6)}


def test_note_from_the_handed_over_bytes(tmp_path: Path) -> None:
    # Released by the assembler: classify gets the chunk's bytes (WIRE_NOTE) and pops them.
    classify, _ = make_classify(tmp_path)
    batch = trace_batch(mixed(), complete_traces=True)
    batch.notes[WIRE_NOTE] = batch.request.SerializeToString()
    classify.process(batch)
    assert WIRE_NOTE not in batch.notes
    assert batch.notes[ERROR_TRACES_NOTE] == failing_ids(batch) == {tid(2), tid(3), tid(4), tid(6)}


def test_note_on_healthy_and_late_batches(tmp_path: Path) -> None:
    classify, _ = make_classify(tmp_path)
    healthy = trace_batch([S("shop", "GET /", 1, 1, kind=SERVER)])
    classify.process(healthy)
    assert healthy.notes[ERROR_TRACES_NOTE] == frozenset()
    late = trace_batch(mixed(), late=True)  # no trace grouping for late spans; the note still holds
    classify.process(late)
    assert late.notes[ERROR_TRACES_NOTE] == failing_ids(late)


def test_spans_read_from_the_handed_over_bytes_classify_as_serialized(tmp_path: Path) -> None:
    # The same spans, with the request's bytes handed over (spans sliced out of them) and without
    # (each span serialized): identical output, decoys and tail-cache repeats included.
    spans = [
        *mixed(),
        S("shop", "GET /", 7, 9, kind=SERVER, attrs={"note": "http.response.status_code error.type"}),
        S("shop", "q", 7, 10, parent=9, kind=CLIENT, attrs={"peer.service": "db", "retry.count": 2}),
        S("shop", "q", 7, 11, parent=9, kind=CLIENT, attrs={"peer.service": "db", "retry.count": 2}),
        S("shop", "GET /", 8, 12, kind=SERVER, exception=("ValueError", "bad", "at x")),
        S("shop", "GET /", 9, 13, kind=SERVER, attrs={"rpc.grpc.status_code": 14}),
    ]
    outputs = []
    for hand_over in (False, True):
        classify, _ = make_classify(tmp_path / str(hand_over))
        batch = trace_batch(spans, complete_traces=True)
        if hand_over:
            batch.notes[WIRE_NOTE] = batch.request.SerializeToString()
        classify.process(batch)
        outputs.append((batch.request.SerializeToString(), batch.notes[ERROR_TRACES_NOTE]))
    assert outputs[0] == outputs[1]
