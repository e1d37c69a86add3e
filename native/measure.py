"""Micro-measurement: µs per bench request for prove_valid against decode + validate_request.

Run from the repository root: ``python native/measure.py`` (errorgate_native installed)."""

from __future__ import annotations

import statistics
import time

from bench.traffic import build_templates, patched
from errorgate.intake import proof
from errorgate.intake.validation import validate_request
from errorgate.receiver.config import ValidationConfig
from errorgate.signals import Signal

ROUNDS, REPEAT = 7, 200


def main() -> None:
    limits = ValidationConfig()
    requests = [(Signal(t.signal), patched(t, i)) for i, t in enumerate(build_templates())]
    items = sum(t.items for t in build_templates()) / len(requests)

    def python_path() -> None:
        for signal, data in requests:
            validate_request(signal, signal.parse(data), limits, data)

    def native_path() -> None:
        for signal, data in requests:
            assert proof.prove_valid(signal, data, limits) is not None

    def per_request(run: object) -> float:
        rounds = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for _ in range(REPEAT):
                run()  # type: ignore[operator]
            rounds.append((time.perf_counter() - start) / (REPEAT * len(requests)) * 1e6)
        return statistics.median(rounds)

    print(
        f"native module in use: {proof.NATIVE}; {len(requests)} bench requests, {items:.0f} items each on average"
    )
    py = per_request(python_path)
    print(f"decode + validate_request: {py:7.1f} µs/request")
    if proof.NATIVE:
        nat = per_request(native_path)
        print(f"prove_valid (native):      {nat:7.1f} µs/request ({py / nat:.0f}x faster)")


if __name__ == "__main__":
    main()
