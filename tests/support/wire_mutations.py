"""Seeded mutations of protobuf bytes for the tests of code that reads hostile requests (the
native validity proof, the native item signatures): each changes a bytearray in place."""

from __future__ import annotations

import random
from collections.abc import Callable


def stretch_varint(rng: random.Random, b: bytearray) -> None:
    """Re-encode the varint that may end at a random byte with 1 to 6 more bytes (same value):
    upb refuses tags and lengths longer than 5 bytes, which a reader must refuse too."""
    i = rng.randrange(len(b))
    b[i] |= 0x80
    b[i + 1 : i + 1] = b"\x80" * rng.randrange(6) + b"\x00"


MUTATIONS: list[Callable[[random.Random, bytearray], None]] = [
    stretch_varint,
    lambda rng, b: b.__setitem__(rng.randrange(len(b)), rng.randrange(256)),
    lambda rng, b: b.insert(rng.randrange(len(b) + 1), rng.randrange(256)),
    lambda rng, b: b.__delitem__(rng.randrange(len(b))),
    lambda rng, b: b.__delitem__(slice(rng.randrange(len(b)), None)),
    lambda rng, b: b.__setitem__(rng.randrange(len(b)), rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF))),
    lambda rng, b: b.__setitem__(slice(rng.randrange(len(b)), None), b[rng.randrange(len(b)) :]),
]
