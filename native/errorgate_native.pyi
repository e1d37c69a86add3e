def prove(
    signal: int, data: bytes, max_attribute_depth: int, max_string_length: int, max_attributes: int
) -> tuple[int, bool] | None:
    """(items, canonical) when ``data`` is proven a valid export request of ``signal``
    (0 traces, 1 logs, 2 metrics), else None. See errorgate/intake/proof.py."""
