"""Time-driven pack state, for the events of driven streams.

:class:`PendingEvents` holds columnar events until their time comes (added in any order,
taken oldest first). :class:`DailySteps` advances a model in whole simulated days and says
up to when its events are complete, which is what a driven stream may release.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DAY_US = 86_400_000_000


class PendingEvents:
    """Batches of equal-length columns, one of them ``t`` (event time, µs).

    Kept in hour buckets, so taking what is due touches only the buckets that are due, not
    everything pending (returns wait up to weeks). Ties in ``t`` keep the order they were
    added in."""

    BUCKET_US = 3_600_000_000

    def __init__(self) -> None:
        self._buckets: dict[int, list[dict[str, Any]]] = {}

    def __bool__(self) -> bool:
        return bool(self._buckets)

    # pickled (batch mode's saved states) as one set of columns, not thousands of small
    # arrays: each bucket merged as ``take`` would merge it, so nothing changes on restore
    def __getstate__(self) -> dict[str, Any]:
        keys = sorted(self._buckets)
        merged = [_merge(self._buckets[k]) for k in keys]
        if not merged:
            return {"keys": np.zeros(0, dtype=np.int64), "sizes": np.zeros(0, np.int64), "cols": {}}
        return {
            "keys": np.array(keys, dtype=np.int64),
            "sizes": np.array([len(m["t"]) for m in merged], dtype=np.int64),
            "cols": {c: np.concatenate([m[c] for m in merged]) for c in merged[0]},
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._buckets = {}
        start = 0
        for key, size in zip(state["keys"].tolist(), state["sizes"].tolist(), strict=True):
            self._buckets[key] = [{c: v[start : start + size] for c, v in state["cols"].items()}]
            start += size

    def add(self, **columns: Any) -> None:
        t = np.asarray(columns["t"])
        if not len(t):
            return
        b = t // self.BUCKET_US
        lo, hi = int(b.min()), int(b.max())
        if lo == hi:
            self._put(lo, columns)
            return
        order = np.argsort(b, kind="stable")
        b = b[order]
        cols = {k: np.asarray(v)[order] for k, v in columns.items()}  # once; then slices
        cuts = (np.flatnonzero(b[1:] != b[:-1]) + 1).tolist()
        for s, e in zip([0, *cuts], [*cuts, len(b)], strict=True):
            self._put(int(b[s]), {k: v[s:e] for k, v in cols.items()})

    def _put(self, bucket: int, columns: dict[str, Any]) -> None:
        batches = self._buckets.setdefault(bucket, [])
        batches.append(columns)
        if len(batches) > 64:  # many small batches (returns): merge them now and then
            self._buckets[bucket] = [_merge(batches)]

    def take(self, until_us: int, limit: int) -> dict[str, Any] | None:
        """At most ``limit`` events with ``t <= until_us``, oldest first; None if none."""
        last = until_us // self.BUCKET_US
        taken: list[dict[str, Any]] = []
        count = 0
        for key in sorted(k for k in self._buckets if k <= last):
            cols = _merge(self._buckets.pop(key))
            n = len(cols["t"])
            due = min(int(np.searchsorted(cols["t"], until_us, side="right")), limit - count)
            if due < n:
                self._buckets[key] = [{k: v[due:] for k, v in cols.items()}]
            if due:
                taken.append({k: v[:due] for k, v in cols.items()})
                count += due
            if due < n or count >= limit:
                break
        if not taken:
            return None
        if len(taken) == 1:
            return taken[0]
        return {k: np.concatenate([c[k] for c in taken]) for k in taken[0]}


def _merge(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch sorted by ``t`` (stable: ties in the order added)."""
    if len(batches) == 1:
        cols = batches[0]
    else:
        cols = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    t = cols["t"]
    if len(t) > 1 and (np.diff(t) < 0).any():
        order = np.argsort(t, kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    return cols


class Steps:
    """A model that changes in whole steps of ``step_us`` (aligned to multiples of it):
    ``_start`` at the first ``advance``, then ``_step`` for every step that ended by ``now``;
    its events go to ``pending`` (or to several buffers, one per stream)."""

    def __init__(self, step_us: int) -> None:
        self.step_us = step_us
        self.t_us: int | None = None  # simulated up to here (a step boundary after the start)
        self.next_step_us = 0
        self.pending = PendingEvents()

    def advance(self, now_us: int) -> None:
        if self.t_us is None:
            self.t_us = now_us
            self.next_step_us = (now_us // self.step_us + 1) * self.step_us
            self._start(now_us)
            return
        while self.next_step_us <= now_us:  # whole steps only: the rest waits for its end
            self._step(self.t_us, self.next_step_us)
            self.t_us = self.next_step_us
            self.next_step_us += self.step_us

    def begin(self, now_us: int) -> None:
        """The run starts at ``now_us``, if the model has not started yet (a stream run starts
        its packs' models when its streams start, not at their first poll: shards that come
        up at different moments begin their stock, catalogue, devices at the same instant)."""
        if self.t_us is None:
            self.advance(now_us)

    def _start(self, now_us: int) -> None:
        """The run starts at ``now_us``."""

    def _step(self, t0: int, t1: int) -> None:
        raise NotImplementedError

    def take_due(
        self,
        until_us: int | None,
        limit: int,
        final: bool,
        pending: PendingEvents | None = None,
    ) -> dict[str, Any] | None:
        """Events a driven stream may release (from ``pending``, by default the model's own):
        up to ``until_us``, and (unless the run ended) only from steps already simulated, so
        every earlier event is known."""
        until = until_us if until_us is not None else 0
        if not final:
            until = min(until, self.t_us if self.t_us is not None else 0)
        return (self.pending if pending is None else pending).take(until, limit)

    def due(
        self,
        until_us: int | None,
        limit: int,
        final: bool,
        pending: PendingEvents | None = None,
    ) -> dict[str, Any] | None:
        """For models that follow the clock: simulate up to ``until_us``, then ``take_due``."""
        if until_us is None:
            return None
        self.advance(until_us)
        return self.take_due(until_us, limit, final, pending)


class DailySteps(Steps):
    """A model that changes in whole days (``_day``)."""

    def __init__(self) -> None:
        super().__init__(DAY_US)

    def _step(self, t0: int, t1: int) -> None:
        self._day(t0, t1)

    def _day(self, t0: int, t1: int) -> None:
        raise NotImplementedError
