"""Vectorised sampling helpers shared by packs."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.encoders import fast


class AliasTable:
    """Walker/Vose alias method: draws from a fixed discrete distribution in O(1) per draw.

    ``rng.choice(p=...)`` and ``searchsorted`` over a CDF cost a binary search per draw with
    cache misses on large catalogues; the alias table costs two uniforms and two gathers.
    """

    __slots__ = ("alias", "k", "prob")

    def __init__(self, weights: npt.ArrayLike) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or len(w) == 0 or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(
                "weights must be a non-empty 1-d array of finite values >= 0, not all 0"
            )
        k = len(w)
        scaled = np.ascontiguousarray(w * (k / w.sum()))
        prob = np.ones(k, dtype=np.float64)
        alias = np.arange(k, dtype=np.int32)
        native = _native()
        if native is not None:  # the same steps in C (catalogues are rebuilt daily)
            native.alias_fill(scaled, prob, alias)
        else:
            _fill(scaled, prob, alias)
        self.prob = prob
        self.alias = alias
        self.k = k

    def sample(self, rng: np.random.Generator, n: int) -> npt.NDArray[np.int32]:
        native = _native()
        if native is not None:  # the same draws in one call (packs sample small blocks often)
            picked = np.empty(n, dtype=np.int32)
            native.alias_pick(rng.random(n), self.prob, self.alias, picked)
            return picked
        return self.pick(rng.random(n))

    def pick(self, uniforms: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
        """The entries that uniforms in [0, 1) draw (numpy; ``sample`` may do it in C)."""
        u = uniforms * self.k
        idx = u.astype(np.int32)
        np.minimum(idx, self.k - 1, out=idx)
        keep = (u - idx) < self.prob[idx]
        out: npt.NDArray[np.int32] = np.where(keep, idx, self.alias[idx])
        return out


def _fill(
    scaled: npt.NDArray[np.float64], prob: npt.NDArray[np.float64], alias: npt.NDArray[np.int32]
) -> None:
    """Vose's loop: small and large stacks, popped from the end."""
    k = len(scaled)
    small = [i for i in range(k) if scaled[i] < 1.0]
    large = [i for i in range(k) if scaled[i] >= 1.0]
    s = scaled.tolist()
    while small and large:
        lo, hi = small.pop(), large.pop()
        prob[lo] = s[lo]
        alias[lo] = hi
        s[hi] = s[hi] + s[lo] - 1.0
        (small if s[hi] < 1.0 else large).append(hi)


def _native() -> Any:
    """The compiled module where it is built and switched on (else the code here runs)."""
    return fast.NATIVE if fast.available() else None
