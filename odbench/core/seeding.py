"""One seed per (base seed, dataset, protocol, normal class, repetition).

Every random choice of a job flows from this number, through two
independent streams (:func:`split_and_fit_seeds`): the split, shared by
every method, and the method's own (initialisation, batches, pyod's
``random_state``).  The seed does not change when other datasets or classes
are added to a suite.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(base_seed: int, dataset: str, protocol: str, normal_class: str | None, repetition: int) -> int:
    """A stable 31-bit seed (hash-based, so independent of Python's hash salt)."""
    key = f"{base_seed}|{dataset}|{protocol}|{normal_class}|{repetition}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


def split_and_fit_seeds(seed: int) -> tuple[int, int]:
    """Two independent streams from a job's seed: one cuts the split, one seeds the method.

    With one number for both, the first draws of a method's initialisation
    would be those that cut its split; ``SeedSequence.spawn`` makes them
    independent while keeping both a function of the job's seed.
    """
    split, fit = np.random.SeedSequence(seed).spawn(2)
    return int(split.generate_state(1)[0] & 0x7FFFFFFF), int(fit.generate_state(1)[0] & 0x7FFFFFFF)
