"""Protobuf wire-format helpers for the trace assembler: find each span's trace in the bytes.

Rebuilding requests message by message (copy each Resource and Scope, append each Span) costs
Python work per span, and so does touching every span as a Python object (~0.4 µs each just
to iterate). Instead the assembler serializes a request once (C) and ``scan`` walks the bytes:
per span one tag, one length and a 16-byte trace id, and consecutive spans of one trace become
one *run* — a byte range of serialized ``spans`` fields that is held, persisted and re-joined
as is. The wire format allows it: a ResourceSpans/ScopeSpans message is its fields in any
order, a repeated field is its elements one after another, and parsing the concatenation of
runs under one resource and scope yields exactly those spans.

A *head* is the serialized non-``spans`` part of a ScopeSpans (``scope`` + ``schema_url``) or
the non-``scope_spans`` part of a ResourceSpans (``resource`` + ``schema_url``): equal heads mean
equal resources/scopes, so they double as the keys that merge runs by content.

``scan`` is exact for any valid encoding; its fast path (trace id = the span's first field)
relies on what upb's ``SerializeToString`` writes — known fields in field-number order, each
singular field once, unknown fields after them — so callers pass bytes upb serialized (never a
sender's bytes: a hand-made encoding may repeat ``trace_id``, and the last one wins). A span
that does not start with a 16-byte ``trace_id`` is parsed field by field instead.
"""

from __future__ import annotations

FIELD_1 = b"\x0a"  # field 1, length-delimited: resource_spans / resource / scope / trace_id
FIELD_2 = b"\x12"  # field 2, length-delimited: scope_spans / spans

_TAG_1 = 0x0A  # field 1, length-delimited
_TAG_2 = 0x12  # field 2, length-delimited

# One run: (trace id, start, end, spans) — data[start:end] is ``spans`` fields of that trace.
Run = tuple[bytes, int, int, int]
# One ScopeSpans as found in a request: (resource head, scope head, runs).
Group = tuple[bytes, bytes, list[Run]]
# Released spans regrouped by content: resource head -> scope head -> serialized ``spans`` fields.
Tree = dict[bytes, dict[bytes, list[bytes]]]


class WireError(ValueError):
    """The bytes are not a valid serialized message."""


def _encode_varint(n: int) -> bytes:
    if n < 0x4000:  # the usual sizes (a resource's spans in a release: a few KiB) without a loop
        return bytes(((n & 0x7F) | 0x80, n >> 7)) if n >= 0x80 else bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_encode_varint(i) for i in range(4096)]


def varint(n: int) -> bytes:
    return _SMALL[n] if n < 4096 else _encode_varint(n)


def field(tag: bytes, data: bytes) -> bytes:
    return tag + (_SMALL[len(data)] if len(data) < 4096 else _encode_varint(len(data))) + data


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _skip(data: bytes, pos: int, key: int, end: int) -> int:
    """Position after the value of the field whose key (tag) was just read, ending by ``end``."""
    wire_type = key & 7
    if wire_type == 0:
        pos = _varint(data, pos)[1]
    elif wire_type == 1:
        pos += 8
    elif wire_type == 2:
        n, pos = _varint(data, pos)
        pos += n
    elif wire_type == 5:
        pos += 4
    elif wire_type == 3:  # a (deprecated) group: skip fields up to its end-group key
        while True:
            if pos >= end:
                raise WireError("unterminated group")
            inner, pos = _varint(data, pos)
            if inner & 7 == 4:
                if inner >> 3 != key >> 3:
                    raise WireError("mismatched end of group")
                break
            pos = _skip(data, pos, inner, end)
    else:
        raise WireError(f"invalid wire type {wire_type}")
    if pos > end:
        raise WireError("field runs past the end of its message")
    return pos


def _length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, end) of the length-delimited value whose length varint is at ``pos``."""
    n, start = _varint(data, pos)
    stop = start + n
    if stop > end:
        raise WireError("field runs past the end of its message")
    return start, stop


def span_trace_id(data: bytes, pos: int, end: int) -> bytes:
    """The ``trace_id`` of the serialized span data[pos:end] (the last one, as a parser takes)."""
    tid = b""
    while pos < end:
        key, pos = _varint(data, pos)
        if key == _TAG_1:
            start, pos = _length(data, pos, end)
            tid = data[start:pos]
        else:
            pos = _skip(data, pos, key, end)
    return tid


def scan(data: bytes) -> list[Group]:
    """Every ScopeSpans of the serialized ExportTraceServiceRequest ``data``, with its runs.

    Raises WireError for bytes that do not parse (never for upb's own output). Fields of the
    request other than ``resource_spans`` are not kept (nor does regrouping keep them)."""
    try:
        return _scan(data)
    except IndexError:  # a length byte past the end of the data
        raise WireError("truncated message") from None


def _scan(data: bytes) -> list[Group]:
    groups: list[Group] = []
    pos, end = 0, len(data)
    # Lengths of one or two bytes are read inline throughout: a call costs more than the rest.
    while pos < end:
        if data[pos] != _TAG_1:  # not resource_spans: the regrouped request does not keep it
            key, pos = _varint(data, pos)
            pos = _skip(data, pos, key, end)
            continue
        n = data[pos + 1]
        if n < 0x80:
            rs_pos = pos + 2
        elif data[pos + 2] < 0x80:
            n = (n & 0x7F) | (data[pos + 2] << 7)
            rs_pos = pos + 3
        else:
            n, rs_pos = _varint(data, pos + 1)
        pos = rs_end = rs_pos + n
        if rs_end > end:
            raise WireError("field runs past the end of its message")
        rhead = b""
        scopes: list[tuple[int, int]] = []
        while rs_pos < rs_end:
            tag = data[rs_pos]
            if tag & 7 != 2 or tag >= 0x80:  # not a length-delimited field with a one-byte tag
                begin = rs_pos
                key, rs_pos = _varint(data, rs_pos)
                rs_pos = _skip(data, rs_pos, key, rs_end)
                rhead += data[begin:rs_pos]
                continue
            n = data[rs_pos + 1]
            if n < 0x80:
                start = rs_pos + 2
            elif data[rs_pos + 2] < 0x80:
                n = (n & 0x7F) | (data[rs_pos + 2] << 7)
                start = rs_pos + 3
            else:
                n, start = _varint(data, rs_pos + 1)
            stop = start + n
            if stop > rs_end:
                raise WireError("field runs past the end of its message")
            if tag == _TAG_2:
                scopes.append((start, stop))
            else:
                rhead += data[rs_pos:stop]
            rs_pos = stop
        for ss_pos, ss_end in scopes:
            shead, runs = _scope_spans(data, ss_pos, ss_end)
            groups.append((rhead, shead, runs))
    return groups


def _scope_spans(data: bytes, pos: int, end: int) -> tuple[bytes, list[Run]]:
    """(head, runs) of the ScopeSpans data[pos:end]: the hot loop, a few bytecodes per span."""
    runs: list[Run] = []
    head = b""
    cur: bytes | None = None  # the trace of the open run; None: no run open
    run_start = 0
    count = 0
    while pos < end:
        if data[pos] == 0x12:  # a span (field 2, length-delimited): checked first, it is most
            n = data[pos + 1]
            if n < 0x80:
                start = pos + 2
            elif data[pos + 2] < 0x80:
                n = (n & 0x7F) | (data[pos + 2] << 7)
                start = pos + 3
            else:
                n, start = _varint(data, pos + 1)
            stop = start + n  # (a span running past ``end`` is caught after the loop)
            # Its trace id is its first field in upb's output, else look it up.
            if n >= 18 and data[start] == 0x0A and data[start + 1] == 16:
                tid = data[start + 2 : start + 18]
            else:
                tid = span_trace_id(data, start, stop)
            if tid != cur:
                if cur is not None:
                    runs.append((cur, run_start, pos, count))
                cur, run_start, count = tid, pos, 0
            count += 1
            pos = stop
            continue
        begin = pos
        if data[pos] == 0x0A and data[pos + 1] < 0x80:  # the scope, if short: no calls
            pos += 2 + data[pos + 1]
            if pos > end:
                raise WireError("field runs past the end of its message")
        else:
            key, pos = _varint(data, pos)
            pos = _skip(data, pos, key, end)
        head += data[begin:pos]
        if cur is not None:  # a head field between spans ends the run
            runs.append((cur, run_start, begin, count))
            cur = None
    if pos != end:
        raise WireError("a span runs past the end of its scope")
    if cur is not None:
        runs.append((cur, run_start, pos, count))
    return head, runs


def add(tree: Tree, rhead: bytes, shead: bytes, spans: bytes) -> None:
    scopes = tree.get(rhead)
    if scopes is None:
        tree[rhead] = {shead: [spans]}
        return
    found = scopes.get(shead)
    if found is None:
        scopes[shead] = [spans]
    else:
        found.append(spans)


def encode_tree(tree: Tree) -> bytes:
    """An ExportTraceServiceRequest from resource head -> scope head -> serialized spans fields.

    Lengths are summed first so the bytes are copied once, by one join (a release is ~0.5 MB:
    nested joins would copy it once per level)."""
    out: list[bytes] = []
    for rhead, scopes in tree.items():
        parts = [rhead]
        size = len(rhead)
        for shead, spans in scopes.items():
            n = len(shead) + sum(map(len, spans))
            prefix = _SMALL[n] if n < 4096 else _encode_varint(n)
            parts.append(FIELD_2)
            parts.append(prefix)
            parts.append(shead)
            parts += spans
            size += 1 + len(prefix) + n
        out.append(FIELD_1)
        out.append(_SMALL[size] if size < 4096 else _encode_varint(size))
        out += parts
    return b"".join(out)
