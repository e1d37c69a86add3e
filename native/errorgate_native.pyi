def prove(
    signal: int, data: bytes, max_attribute_depth: int, max_string_length: int, max_attributes: int
) -> tuple[int, bool] | None:
    """(items, canonical) when ``data`` is proven a valid export request of ``signal``
    (0 traces, 1 logs, 2 metrics), else None. See errorgate/intake/proof.py."""

def item_signatures(signal: int, data: bytes) -> list[bytes | None] | None:
    """Per span or log record of the export request ``data`` (signal 0 traces, 1 logs; 2 metrics
    gives None), its bytes without ids and times, or None where Python computes it (a span with
    events or links); None when the bytes do not frame as a request. See
    errorgate/processors/redaction/signatures.py."""
