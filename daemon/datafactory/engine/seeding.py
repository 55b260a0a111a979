"""Seeded randomness: one ``SeedSequence`` tree per run, children addressed by name.

Children are keyed by a stable hash of their path (``("retail", "pos_transaction")``), not by
spawn order, so adding a stream (or a shard) never changes the data of another one.
"""

from __future__ import annotations

import numpy as np

from datafactory.engine.identity import stable_hash64


class SeedTree:
    """The run's seed; ``child(*path)`` gives an independent, reproducible ``SeedSequence``."""

    __slots__ = ("seed",)

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = seed

    def child(self, *path: str | int) -> np.random.SeedSequence:
        key = tuple(stable_hash64(p) if isinstance(p, str) else p for p in path)
        return np.random.SeedSequence(self.seed, spawn_key=key)

    def rng(self, *path: str | int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.child(*path)))
