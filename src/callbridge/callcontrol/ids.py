"""Ids: the factory the service draws conn_id, leg, transfer, action and recall ids from."""

from __future__ import annotations

import os
from collections.abc import Callable

IdFactory = Callable[[str], str]


class _RandomHex:
    """128-bit random values as 32 hex digits, drawn from the OS in blocks (one `os.urandom` per 256 ids)."""

    __slots__ = ("_block", "_next")
    _IDS_PER_BLOCK = 256

    def __init__(self) -> None:
        self._block = ""
        self._next = 0

    def __call__(self) -> str:
        at = self._next
        if at >= len(self._block):
            self._block, at = os.urandom(16 * self._IDS_PER_BLOCK).hex(), 0
        self._next = at + 32
        return self._block[at:at + 32]


_random_hex = _RandomHex()


def random_ids(prefix: str) -> str:
    """Opaque, URL-safe, unique ids: a one-letter kind and 32 hex digits (128 random bits, as uuid4 has 122).

    conn_id, leg, transfer and action ids are random rather than a counter: unique across restarts and nodes
    without coordination, and they say nothing about how many calls a node carried or which one came first.
    Drawing the randomness in blocks keeps them off the hot path's profile.
    """
    return prefix + _random_hex()
