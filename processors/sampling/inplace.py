"""Dropping items from OTLP requests in place: deleting runs of a repeated field only moves
pointers in C, where rebuilding the field would deep-copy every item that stays."""

from __future__ import annotations

from typing import Any


def keep_indices(container: Any, keep: list[int], n: int) -> None:
    """Delete every item of ``container`` (of length ``n``) whose index is not in ``keep`` (ascending)."""
    end = n
    for i in reversed(keep):  # from the end, so the indices still to visit stay valid
        if i + 1 < end:
            del container[i + 1 : end]
        end = i
    if end:
        del container[:end]
