"""Consistent probability sampling, per the OpenTelemetry probability-sampling specification.

Randomness R is the ``rv`` value of the ``ot`` tracestate entry when present, else the lower
56 bits of the trace id. A sampler with probability p has threshold T = (1 - p) * 2^56 and keeps
an item when R >= T, so every replica (and every later stage) agrees on the same trace. The
threshold travels in tracestate as ``ot=th:<hex>`` (trailing zeros removed); a later stage may
only raise it, and the item then stands for 2^56 / (2^56 - T) items (its adjusted count).
"""

from __future__ import annotations

MAX_THRESHOLD = 1 << 56
_HEX_DIGITS = 14


def threshold_for(probability: float) -> int:
    """Rejection threshold of a sampler keeping ``probability`` of the items."""
    if probability >= 1.0:
        return 0
    if probability <= 0.0:
        return MAX_THRESHOLD
    # (2^56 - round(p * 2^56)) keeps p exact to the last bit; (1 - p) * 2^56 loses the low bits.
    return min(MAX_THRESHOLD - 1, max(0, MAX_THRESHOLD - round(probability * MAX_THRESHOLD)))


def adjusted_count(threshold: int | None) -> float:
    """How many items one item that passed ``threshold`` represents (1 when unsampled)."""
    if not threshold:
        return 1.0
    return MAX_THRESHOLD / (MAX_THRESHOLD - threshold)


def randomness(trace_id: bytes, tracestate: str = "") -> int:
    rv = ot_values(tracestate).get("rv")
    if rv is not None and len(rv) == _HEX_DIGITS:
        try:
            return int(rv, 16)
        except ValueError:
            pass
    return int.from_bytes(trace_id[-7:], "big")


def parse_tracestate(tracestate: str) -> list[tuple[str, str]]:
    entries = []
    for member in tracestate.split(","):
        member = member.strip()
        if "=" in member:
            key, value = member.split("=", 1)
            entries.append((key.strip(), value.strip()))
    return entries


def ot_values(tracestate: str) -> dict[str, str]:
    if "ot=" not in tracestate:
        return {}
    for key, value in parse_tracestate(tracestate):
        if key == "ot":
            return dict(p.split(":", 1) for p in value.split(";") if ":" in p)
    return {}


def get_threshold(tracestate: str) -> int | None:
    """The ``th`` already on an item, or None when absent or malformed."""
    th = ot_values(tracestate).get("th")
    if th is None or not 1 <= len(th) <= _HEX_DIGITS:
        return None
    try:
        return int(th.ljust(_HEX_DIGITS, "0"), 16)
    except ValueError:
        return None


def format_threshold(threshold: int) -> str:
    return f"{threshold:0{_HEX_DIGITS}x}".rstrip("0") or "0"


def with_threshold(tracestate: str, threshold: int) -> str:
    """``tracestate`` with ``ot=th`` set to ``threshold`` unless it already is at least as high.

    The modified ``ot`` entry moves to the front, as W3C Trace Context asks of updated entries.
    """
    current = get_threshold(tracestate)
    if current is not None and current >= threshold:
        return tracestate
    entries = parse_tracestate(tracestate)
    values = ot_values(tracestate)
    values["th"] = format_threshold(threshold)
    ot = ";".join(f"{k}:{v}" for k, v in values.items())
    rest = [f"{k}={v}" for k, v in entries if k != "ot"]
    return ",".join([f"ot={ot}", *rest])
