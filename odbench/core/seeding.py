"""One seed per (base seed, dataset, protocol, normal class, repetition).

Every random choice of a job (the split, the method's initialisation) flows
from this number, so the same split is shared by every method, and the seed
does not change when other datasets or classes are added to a suite.
"""

from __future__ import annotations

import hashlib


def derive_seed(base_seed: int, dataset: str, protocol: str, normal_class: str | None, repetition: int) -> int:
    """A stable 31-bit seed (hash-based, so independent of Python's hash salt)."""
    key = f"{base_seed}|{dataset}|{protocol}|{normal_class}|{repetition}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF
