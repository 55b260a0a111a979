"""Vectorised sampling helpers shared by packs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


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
        scaled = w * (k / w.sum())
        prob = np.ones(k, dtype=np.float64)
        alias = np.arange(k, dtype=np.int32)
        small = [i for i in range(k) if scaled[i] < 1.0]
        large = [i for i in range(k) if scaled[i] >= 1.0]
        s = scaled.tolist()
        while small and large:
            lo, hi = small.pop(), large.pop()
            prob[lo] = s[lo]
            alias[lo] = hi
            s[hi] = s[hi] + s[lo] - 1.0
            (small if s[hi] < 1.0 else large).append(hi)
        self.prob = prob
        self.alias = alias
        self.k = k

    def sample(self, rng: np.random.Generator, n: int) -> npt.NDArray[np.int32]:
        u = rng.random(n) * self.k
        idx = u.astype(np.int32)
        np.minimum(idx, self.k - 1, out=idx)
        keep = (u - idx) < self.prob[idx]
        out: npt.NDArray[np.int32] = np.where(keep, idx, self.alias[idx])
        return out
