"""Sales tax by region over time. Each region's rate is revised at calendar quarter starts (a
local tax change takes effect on the 1st of January, April, July or October): in a quarter it
is the region's base rate plus a step drawn from a hash of (the run's tax key, the region, the
quarter), most often none. A function of time alone, so every shard, every restart and every
block that spans a quarter's start agree on it; the ``store`` stream announces each change."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
BASE_BP = np.array([825, 700, 887, 725, 600])  # each region's sales tax, basis points
_STEPS = np.array([0] * 17 + [25, -25, 50])  # a quarter's step from the base: 85 % none
HORIZON_QUARTERS = 100  # changes announced ahead (25 years: longer than any run)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: well-spread 64-bit hashes, vectorised."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: npt.NDArray[np.uint64] = x ^ (x >> np.uint64(31))
    return out


def quarter(t_us: npt.ArrayLike) -> I64:
    """Calendar quarters since 1970 Q1 (UTC)."""
    months = np.asarray(t_us, dtype=np.int64).astype("datetime64[us]").astype("datetime64[M]")
    out: I64 = months.astype(np.int64) // 3
    return out


def quarter_start_us(q: npt.ArrayLike) -> I64:
    months = (np.asarray(q, dtype=np.int64) * 3).astype("datetime64[M]")
    out: I64 = months.astype("datetime64[us]").astype(np.int64)
    return out


def rate_bp(key: int, region: npt.ArrayLike, q: npt.ArrayLike) -> I64:
    """The rate (basis points) of each region in each quarter."""
    region = np.asarray(region, dtype=np.int64)
    q = np.asarray(q, dtype=np.int64)
    with np.errstate(over="ignore"):
        h = _mix(
            np.uint64(key)
            ^ (region.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
            ^ ((q + (1 << 20)).astype(np.uint64) * np.uint64(0xD1B54A32D192ED03))
        )
    out: I64 = BASE_BP[region] + _STEPS[(h % np.uint64(len(_STEPS))).astype(np.int64)]
    return out


# the regions' rates in the quarter rate_at used last: (key, its start, its end, the rates)
_LAST: tuple[int, int, int, I64] | None = None


def rate_at(key: int, region: npt.ArrayLike, t_us: npt.ArrayLike) -> I64:
    """Each row's rate at its time (rows within one quarter, as nearly every block is: a
    lookup in that quarter's table of the regions' rates, kept for the next call)."""
    global _LAST
    t = np.asarray(t_us, dtype=np.int64)
    if not len(t):
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(t.min()), int(t.max())
    last = _LAST
    if last is None or last[0] != key or not last[1] <= lo <= hi < last[2]:
        q = quarter([lo, hi])
        if q[0] != q[1]:
            return rate_bp(key, region, quarter(t))
        start, end = quarter_start_us([q[0], q[0] + 1]).tolist()
        regions = np.arange(len(BASE_BP))
        last = _LAST = (key, start, end, rate_bp(key, regions, np.full(len(BASE_BP), q[0])))
    out: I64 = last[3][np.asarray(region, dtype=np.int64)]
    return out


def changes(key: int, regions: I64, after_us: int) -> dict[str, I64]:
    """The stores' rate changes at the quarter starts after ``after_us`` (``HORIZON_QUARTERS``
    of them), in time order: ``t``, ``store``, ``bp`` (the new rate)."""
    first = int(quarter(after_us)) + 1
    qs = np.arange(first, first + HORIZON_QUARTERS, dtype=np.int64)
    store = np.arange(len(regions), dtype=np.int64)
    q_grid, s_grid = np.meshgrid(qs, store, indexing="ij")  # quarter-major: time order
    new = rate_bp(key, regions[s_grid], q_grid)
    old = rate_bp(key, regions[s_grid], q_grid - 1)
    hit = new != old
    return {"t": quarter_start_us(q_grid[hit]), "store": s_grid[hit], "bp": new[hit]}
