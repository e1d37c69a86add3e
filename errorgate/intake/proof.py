"""Stub of the validity proof (the native-check branch provides the real module)."""

from __future__ import annotations

from typing import NamedTuple

from errorgate.receiver.config import ValidationConfig
from errorgate.signals import Signal

NATIVE = False


class Proof(NamedTuple):
    items: int
    canonical: bool


def prove_valid(signal: Signal, data: bytes, limits: ValidationConfig) -> Proof | None:
    return None
