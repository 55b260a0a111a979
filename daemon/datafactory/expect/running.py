"""Running totals (a stock on hand, a balance): a row per group per window from the group's
first window to the span's last, each its total so far, in window then key order.

A shard's partial tables are laid out in its worker (:func:`laid_out`: its groups are its
own, so most of the work is done in parallel), and the shards' tables joined in the parent
(:func:`joined`). Tables here have the columns ``window`` (µs), the keys ``k0..`` and the
parts ``p0..`` (a count's or sum's values).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

COPY_KEYS = 2  # a running table's keys copied window by window when groups x the windows
# they begin in is at most this many times its rows (else taken row by row)


def laid_out(t: pa.Table, keys: list[str], window_us: int, end_us: int | None) -> pa.Table:
    """Running totals (a count's or sum's one part each), a row per group per window
    from its first to the span's last, in window then key order: the groups numbered in
    their keys' order, each group's windows laid out densely and each part's values
    summed cumulatively within the group (numpy), then the rows taken window by window."""
    w = window_us
    window = t["window"].to_numpy()
    last = int(window.max()) if end_us is None else (end_us - 1) // w * w
    group = _group_ids(t, keys)
    groups = int(group.max()) + 1
    first = np.full(groups, np.iinfo(np.int64).max)
    np.minimum.at(first, group, window)
    sizes = (last - first) // w + 1
    start = np.concatenate([[0], np.cumsum(sizes)])
    n = int(start[-1])
    owner = np.repeat(np.arange(groups), sizes)
    at = np.arange(n) - start[owner]
    lo = int(first.min())  # the first window of any group
    order = _window_major(owner, (first[owner] - lo) // w + at, groups)
    owner = owner[order]
    out: dict[str, Any] = {"window": pa.array(first[owner] + at[order] * w, pa.int64())}
    one = np.zeros(groups, dtype=np.int64)  # a group's key values: those of one of its rows
    one[group] = np.arange(len(group))
    group_keys = t.select(keys).take(pa.array(one))
    begun = (first - lo) // w  # the window each group begins in
    if len(np.unique(begun)) * groups <= COPY_KEYS * n:
        # a window's rows are the groups begun by then, in order: the same groups while
        # none begins, copied as they are (cheaper than taking every row's keys)
        width = (last - lo) // w + 1
        alive = np.cumsum(np.bincount(begun, minlength=width))
        chunks: list[list[pa.Array]] = []
        for c in range(width):
            if not c or alive[c] != alive[c - 1]:
                now = [col.combine_chunks() for col in group_keys.filter(pa.array(begun <= c))]
            chunks.append(now)
        for i, name in enumerate(keys):
            out[name] = pa.concat_arrays([x[i] for x in chunks])
    else:
        for name in keys:
            out[name] = group_keys[name].take(pa.array(owner))
    place = start[group] + (window - first[group]) // w
    for part in _parts(t):
        col = t[part]
        if pa.types.is_decimal(col.type):  # exact: as Python decimals
            dense: Any = [0] * n
            for i, v in zip(place.tolist(), col.to_pylist(), strict=True):
                dense[i] += v or 0  # (a group's window may be in several partials)
            total = list(itertools.accumulate(dense))
            base = [total[r - 1] if r else 0 for r in start[:-1].tolist()]
            values = [total[i] - base[g] for i, g in zip(order.tolist(), owner.tolist(),
                                                         strict=True)]  # fmt: skip
            out[part] = pa.array(values, col.type)
            continue
        dense = np.zeros(n, dtype=col.type.to_pandas_dtype())
        np.add.at(dense, place, col.fill_null(0).to_numpy())
        sums = np.cumsum(dense)
        before = np.r_[0, sums][start[:-1]]  # the total before each group's first row
        out[part] = pa.array(sums[order] - before[owner], col.type)
    return pa.table(out)


def joined(runs: list[pa.Table], keys: list[str]) -> pa.Table:
    """Shards' running totals as one table in window then key order: window by window,
    each shard's rows in turn, when each shard's groups all come before the next's (as
    shards own ranges of a population: stores S0001-S0025, S0026-S0050...); otherwise
    (a group in several shards) a group's totals in each shard added up and sorted."""
    if _one_after_another(runs, keys):
        return _window_by_window(runs)
    parts = _parts(runs[0])
    aggs = [(p, "sum") for p in parts]
    summed = pa.concat_tables(runs).group_by(["window", *keys], use_threads=False)
    t = summed.aggregate(aggs).select(["window", *keys, *(f"{p}_sum" for p in parts)])
    t = t.rename_columns(["window", *keys, *parts])
    return t.sort_by([("window", "ascending"), *((k, "ascending") for k in keys)])


def _parts(t: pa.Table) -> list[str]:
    """A table's parts' columns (``p0``...)."""
    return [c for c in t.column_names if c.startswith("p")]


def _one_after_another(runs: list[pa.Table], keys: list[str]) -> bool:
    """Whether each running table's groups all come (in key order) before the next's: its
    last window lists every group of its, first to last."""
    bounds = []
    for t in runs:
        window = t["window"].to_numpy()
        for i in (int(np.searchsorted(window, window[-1])), t.num_rows - 1):
            bounds.append(t.select(keys).slice(i, 1))
    edge = _group_ids(pa.concat_tables(bounds), keys)  # first, last, first, last...
    return bool(np.all(np.diff(edge)[1::2] > 0))


def _window_by_window(runs: list[pa.Table]) -> pa.Table:
    """Tables in window order each, as one: each window's rows of each in turn (slices)."""
    windows = [t["window"].to_numpy() for t in runs]
    every = np.unique(np.concatenate([w[np.r_[True, w[1:] != w[:-1]]] for w in windows]))
    ends = [np.searchsorted(w, every, side="right") for w in windows]
    starts = [np.r_[0, e[:-1]] for e in ends]
    pieces = [
        t.slice(s[i], e[i] - s[i])
        for i in range(len(every))
        for t, s, e in zip(runs, starts, ends, strict=True)
    ]
    return pa.concat_tables(pieces)


def _group_ids(t: pa.Table, keys: list[str]) -> npt.NDArray[np.int64]:
    """Each row's group (its keys' values) numbered in the keys' sort order, from 0."""
    group = np.zeros(t.num_rows, dtype=np.int64)
    for name in keys:  # (keys' ranks combined)
        codes = _ranks(t[name])
        _, group = np.unique(group * (int(codes.max()) + 1) + codes, return_inverse=True)
        group = group.reshape(-1)
    return group


def _ranks(col: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """Each row's value's rank among the column's distinct values, in Arrow's sort order
    (nulls last)."""
    enc = pc.dictionary_encode(col).combine_chunks()
    order = pc.array_sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(len(order) + 1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    rank[-1] = len(order)  # null
    codes = enc.indices.fill_null(len(order)).to_numpy(zero_copy_only=False)
    ranks: npt.NDArray[np.int64] = rank[codes.astype(np.int64)]
    return ranks


def _window_major(
    owner: npt.NDArray[np.int64], column: npt.NDArray[np.int64], groups: int
) -> npt.NDArray[np.int64]:
    """The order that takes rows laid out group by group (``owner``, ascending) window by
    window (``column``: the window's index), groups in order within a window."""
    width = int(column.max()) + 1 if len(column) else 0
    if groups * width > 4 * len(owner) + 4096:  # sparse: sort
        return np.lexsort((owner, column))
    grid = np.full((groups, width), -1, dtype=np.int64)
    grid[owner, column] = np.arange(len(owner))
    flat = grid.T.reshape(-1)
    return flat[flat >= 0]
