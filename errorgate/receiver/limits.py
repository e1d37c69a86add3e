"""Decoding a request body within the receiver's limits on whole requests (``receivers.<id>.limits``):
counts are checked before the expensive work (protobuf decoding, JSON-to-protobuf conversion),
so a small request that would decode to millions of objects costs next to nothing."""

from __future__ import annotations

from errorgate.errors import LimitExceeded
from errorgate.otlp.counts import ITEMS, RESOURCES, Caps, Over, WireError, over_cap, over_cap_json
from errorgate.otlp.decode import REQUEST_NAMES, decode
from errorgate.otlp.json_format import JsonTooDeep, json_to_request, load_json
from errorgate.receiver.config import RequestLimitsConfig
from errorgate.signals import ExportRequest, Signal

_ITEM_NOUNS = {
    Signal.TRACES: "spans",
    Signal.LOGS: "log records",
    Signal.METRICS: "data points (a metric without any counts as one)",
}


class RequestLimits:
    """One receiver's limits on whole requests; ``key_path`` is the config key of its section."""

    def __init__(self, config: RequestLimitsConfig, key_path: str) -> None:
        self.config = config
        self.key_path = key_path
        self._caps = Caps(
            config.max_resources_per_request, config.max_scopes_per_request, config.max_items_per_request
        )

    def decode_protobuf(self, signal: Signal, data: bytes) -> ExportRequest:
        """The decoded request. Raises ``LimitExceeded`` (nothing decoded) or ``ValueError``
        (malformed), both with PII-free messages naming what was wrong."""
        self.check_protobuf(signal, data)
        return decode(signal, data)

    def check_protobuf(self, signal: Signal, data: bytes) -> None:
        """``decode_protobuf`` without the decoding: the request is within the caps (the intake
        decodes it, or proves it valid without decoding: ``errorgate.intake.proof``)."""
        try:
            over = over_cap(signal, data, self._caps)
        except WireError as e:
            raise ValueError(f"cannot decode {REQUEST_NAMES[signal]}: {e}") from None
        if over is not None:
            raise LimitExceeded(self._message(signal, over))

    def decode_json(self, signal: Signal, data: bytes) -> ExportRequest:
        """``decode_protobuf`` for an OTLP/JSON body; nesting deeper than ``max_json_depth`` is a
        ``ValueError`` naming the key."""
        depth = self.config.max_json_depth
        try:
            doc = load_json(data, depth)
            over = over_cap_json(signal, doc, self._caps)
            if over is not None:
                raise LimitExceeded(self._message(signal, over))
            return json_to_request(signal, doc, depth)
        except JsonTooDeep as e:
            raise ValueError(f"{e} ({self.key_path}.max_json_depth={depth})") from None

    def _message(self, signal: Signal, over: Over) -> str:
        if over.what == RESOURCES:
            cap, key, noun = self._caps.resources, "max_resources_per_request", "resource entries"
        elif over.what == ITEMS:
            cap, key, noun = self._caps.items, "max_items_per_request", _ITEM_NOUNS[signal]
        else:
            cap, key, noun = self._caps.scopes, "max_scopes_per_request", "scope entries"
        return f"request holds more than {cap} {noun} ({self.key_path}.{key}={cap})"
