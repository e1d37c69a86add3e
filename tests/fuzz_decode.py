"""Fuzz target (atheris, coverage-guided) for what both receivers do with a request body before
the intake: the pre-decode limit checks, then protobuf decoding (gRPC and OTLP/HTTP protobuf) or
OTLP/JSON parsing and conversion (OTLP/HTTP JSON); and the native validity proof, which must
never prove a body that does not decode, that validation would cut, or with a wrong count.

Every input must get a defined answer: a decoded request (which serializes and decodes again to
the same bytes, as the gateway forwards it), ``ValueError`` (400 / INVALID_ARGUMENT) or
``LimitExceeded`` (413 / RESOURCE_EXHAUSTED). Anything else is a crash.

    python -m tests.fuzz_decode [libFuzzer flags] CORPUS_DIR   # e.g. -max_total_time=600

An empty CORPUS_DIR is first filled with seeds (real SDK requests in both encodings and the
hostile shapes of tests/test_receiver_limits.py); ``-dict=FILE`` with ``write_dictionary(FILE)``
gives the mutator OTLP/JSON's field names. tests/test_receiver_fuzz.py runs it bounded.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path
from typing import Any

import atheris

if __name__ == "__main__":
    # Coverage feedback from errorgate's code, only when fuzzing: importing this module from a
    # test must leave the test process's modules as they are.
    with atheris.instrument_imports(include=["errorgate"]):
        import errorgate.receiver.limits  # noqa: F401

from errorgate.errors import LimitExceeded
from errorgate.intake.proof import prove_valid
from errorgate.intake.validation import validate_request
from errorgate.otlp.decode import decode
from errorgate.otlp.json_format import to_json
from errorgate.receiver.config import RequestLimitsConfig, ValidationConfig
from errorgate.receiver.limits import RequestLimits
from errorgate.signals import ExportRequest, Signal, count_items

# Small caps, so that inputs of a few KB reach the limit paths too; and the defaults.
LIMITS = (
    RequestLimits(
        RequestLimitsConfig(
            max_items_per_request=64, max_resources_per_request=8, max_scopes_per_request=8, max_json_depth=24
        ),
        "receivers.otlp.limits",
    ),
    RequestLimits(RequestLimitsConfig(), "receivers.otlp.limits"),
)


# The native validity proof (errorgate.intake.proof) under small limits and the defaults.
VALIDATION = (
    ValidationConfig(max_attribute_depth=2, max_string_length=48, max_attributes=4),
    ValidationConfig(),
)


def check(data: bytes) -> None:
    """Raise (AssertionError or whatever escaped) if ``data`` gets no defined answer."""
    for signal in Signal:
        _check_proof(signal, data)
    for limits in LIMITS:
        for signal in Signal:
            for decoder in (limits.decode_protobuf, limits.decode_json):
                try:
                    request = decoder(signal, data)
                except (ValueError, LimitExceeded):
                    continue
                _check_request(signal, request)


def _check_proof(signal: Signal, data: bytes) -> None:
    """A proof must hold: the body decodes, validation rejects nothing, the count is right and
    a canonical body is what serializing gives (the gateway skips decoding on its word)."""
    for limits in VALIDATION:
        found = prove_valid(signal, data, limits)
        if found is None:
            continue
        request = decode(signal, data)  # ValueError here is a crash: the proof said it decodes
        assert not validate_request(signal, request, limits, data)
        assert found.items == count_items(request)
        assert not found.canonical or request.SerializeToString() == data


def _check_request(signal: Signal, request: ExportRequest) -> None:
    assert isinstance(request, type(signal.new_request()))
    wire = request.SerializeToString()
    assert signal.parse(wire).SerializeToString() == wire


def test_one_input(data: bytes) -> None:
    check(data)


def seeds() -> list[bytes]:
    """Real SDK requests (protobuf and JSON), small hostile shapes, deep nesting."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from tests.support.receiver_kit import sdk_logs, sdk_metrics, sdk_spans
    from tests.test_receiver_limits import (
        deep_json_log,
        deep_log_request,
        empty_items,
        empty_points,
        empty_resources,
        empty_scopes,
    )

    requests = [encode_spans(sdk_spans()), encode_logs(sdk_logs()), encode_metrics(sdk_metrics())]
    out = [r.SerializeToString() for r in requests] + [to_json(r).encode() for r in requests]
    out += [empty_items(80), empty_resources(12), empty_scopes(12), empty_points(80)]
    out += [deep_log_request(60), deep_json_log(10), b"{}", b"[]"]
    return out


_NAMES: list[str] = []  # every OTLP field name (JSON and proto spelling), filled below


def dictionary() -> list[bytes]:
    """Tokens for mutating OTLP/JSON: every field's JSON and proto name, quoted, and JSON syntax."""
    names: set[str] = set()
    pending = [signal.new_request().DESCRIPTOR for signal in Signal]
    seen: set[str] = set()
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            names.update((field.json_name, field.name))
            if field.message_type is not None:
                pending.append(field.message_type)
    _NAMES[:] = sorted(names)
    tokens = [f'"{name}":'.encode() for name in sorted(names)]
    return [*tokens, b"{", b"}", b"[", b"]", b",", b"null", b"true", b'"1"', b"-1", b"1e400", b'"\\ud800"']


def write_dictionary(path: Path) -> None:
    """``dictionary()`` in libFuzzer's -dict format."""
    lines = ['"' + "".join(f"\\x{b:02x}" for b in token) + '"' for token in dictionary()]
    path.write_text("\n".join(lines) + "\n")


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's byte mutations, and for inputs that are JSON, half the time a change to the
    document's structure (a node replaced by another type, a list repeated, deeper nesting, a
    key renamed): byte flips alone rarely keep JSON parseable long enough to reach conversion."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict | list):
            out = json.dumps(_mutate_node(doc, rng)).encode()
            if len(out) <= max_size:
                return out
    return atheris.Mutate(data, max_size)


def _mutate_node(doc: Any, rng: random.Random) -> Any:
    nodes: list[tuple[Any, Any]] = []  # (container, key or index) of every node
    pending = [doc]
    while pending:
        node = pending.pop()
        children = (
            node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        )
        for key, child in children:
            nodes.append((node, key))
            pending.append(child)
    if not nodes:
        return {rng.choice(_NAMES): _random_value(rng)}
    container, key = rng.choice(nodes)
    child = container[key]
    choice = rng.randrange(5)
    if choice == 0:
        container[key] = _random_value(rng)
    elif choice == 1 and isinstance(child, list):
        container[key] = child * rng.randint(2, 40)
    elif choice == 2:
        container[key] = {rng.choice(_NAMES): child} if rng.random() < 0.5 else [child]
    elif choice == 3 and isinstance(container, dict):
        container[rng.choice(_NAMES)] = container.pop(key)
    else:
        container[key] = copy.deepcopy(rng.choice(nodes)[0])
    return doc


def _random_value(rng: random.Random) -> Any:
    return rng.choice(
        [None, True, 0, -1, 2**64, 1.5, 1e308, "", "zz", "0102", "1" * 40, "NaN", [], {}, [{}], "\ud800"]
    )


def write_seeds(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (corpus / f"seed-{i:02d}").write_bytes(seed)


def main() -> None:
    paths = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    if paths and not paths[0].is_file() and not any(paths[0].iterdir() if paths[0].exists() else ()):
        write_seeds(paths[0])  # an empty corpus directory (a file is an input to run once)
    dictionary()  # the field names for ``mutate``
    atheris.Setup(sys.argv, test_one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
