"""Retail customers: segments, loyalty, acquisition, churn and win-back.

State is numpy arrays over every customer ever created (they grow as customers are
acquired). Time-driven changes are decided in daily steps at the *generation edge*
(``advance(now)``, called before a POS block is made), each given an event time in the
interval just simulated. Churn respects what was already sold: a customer is a churn
candidate only once every transaction made for them has been released, and churns after the
last of them, so a churned customer never transacts until reactivated.

Churn: the expected number of churns per day is ``h * active`` with
``h = -ln(1 - churn_rate) / 365`` (so ``churn_rate`` is the annual rate); who churns is
weighted by inactivity (days since the last purchase, rising) and loyalty (members churn at
half the weight).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.engine.sampling import AliasTable
from datafactory.engine.timeline import DAY_US, DailySteps
from datafactory_retail import kernels

SEGMENTS = ("value", "family", "premium", "occasional")
SEGMENT_SHARE = np.array([0.35, 0.30, 0.15, 0.20])
VISIT_WEIGHT = np.array([1.0, 1.5, 0.8, 0.3])  # relative shopping frequency
BASKET_FACTOR = np.array([0.8, 1.6, 1.0, 0.7])  # basket size vs the pack's mean
LOYALTY_P = np.array([0.6, 0.8, 0.7, 0.3])  # chance a customer joins the loyalty scheme
EVENT_TYPES = ("created", "updated", "churned", "reactivated")
ACTIVE, CHURNED = 0, 1


class Customers(DailySteps):
    def __init__(
        self, p: Any, rng: np.random.Generator, n_stores: int, id_prefix: str = "C"
    ) -> None:
        super().__init__()
        self.id_prefix = id_prefix
        self.p = p
        self.rng = rng
        self.n_stores = n_stores
        n = p.customers
        self.n = 0
        self.segment = np.zeros(0, dtype=np.int8)
        self.loyalty = np.zeros(0, dtype=np.bool_)
        self.home_store = np.zeros(0, dtype=np.int32)
        self.status = np.zeros(0, dtype=np.int8)
        self.churned_us = np.zeros(0, dtype=np.int64)
        self.last_tx_us = np.zeros(0, dtype=np.int64)  # last released purchase
        self.last_pick_seq = np.zeros(0, dtype=np.int64)  # last transaction made for them
        self.pool: tuple[str, ...] = ()
        self.released_seq = 0  # every POS transaction below this seq has been released
        self.hazard = -math.log(max(1e-12, 1 - p.churn_rate)) / 365
        self.winback = -math.log(max(1e-12, 1 - p.winback_rate)) / 365
        self.update_rate = p.customer_update_rate / 365
        self.acquire_per_day = p.customers * p.acquisition_rate / 365
        self.emit = False  # the customer_event stream is enabled
        self._sampler: AliasTable | None = None
        self._active_idx = np.zeros(0, dtype=np.int64)
        self._initial = n
        self.churned_total = 0

    # -- state ------------------------------------------------------------------------------

    def _grow(self, k: int, t_us: int) -> npt.NDArray[np.int64]:
        """``k`` new customers created at ``t_us``; returns their indices."""
        rng = self.rng
        start = self.n
        self.n += k
        seg = rng.choice(len(SEGMENTS), k, p=SEGMENT_SHARE).astype(np.int8)
        self.segment = np.concatenate([self.segment, seg])
        self.loyalty = np.concatenate([self.loyalty, rng.random(k) < LOYALTY_P[seg]])
        self.home_store = np.concatenate(
            [self.home_store, rng.integers(0, self.n_stores, k).astype(np.int32)]
        )
        self.status = np.concatenate([self.status, np.zeros(k, dtype=np.int8)])
        self.churned_us = np.concatenate([self.churned_us, np.zeros(k, dtype=np.int64)])
        self.last_tx_us = np.concatenate([self.last_tx_us, np.full(k, t_us, dtype=np.int64)])
        self.last_pick_seq = np.concatenate([self.last_pick_seq, np.full(k, -1, dtype=np.int64)])
        if self.n > len(self.pool):  # ids are rendered once per capacity step
            cap = max(self.n, 2 * len(self.pool), 1024)
            self.pool = tuple(f"{self.id_prefix}{i + 1:08d}" for i in range(cap))
        self._sampler = None
        return np.arange(start, self.n, dtype=np.int64)

    def _record(self, kind: int, idx: npt.NDArray[np.int64], times: npt.NDArray[np.int64]) -> None:
        if self.emit and len(idx):
            self.pending.add(
                t=times,
                customer=idx,
                type=np.full(len(idx), kind, dtype=np.int32),
                segment=self.segment[idx].astype(np.int32),
                loyalty=self.loyalty[idx].copy(),
                store=self.home_store[idx].copy(),
                inactive_days=((times - self.last_tx_us[idx]) // DAY_US).astype(np.int64),
            )

    def _start(self, now_us: int) -> None:
        """The run starts: the initial base exists from here."""
        idx = self._grow(self._initial, now_us)
        self._record(0, idx, np.full(len(idx), now_us, dtype=np.int64))

    def _times(self, lo: npt.NDArray[np.int64] | int, hi: int, k: int) -> npt.NDArray[np.int64]:
        lo_a = np.broadcast_to(np.asarray(lo, dtype=np.int64), (k,))
        span = np.maximum(hi - lo_a, 1)
        return lo_a + (self.rng.random(k) * span).astype(np.int64)

    def _day(self, t0: int, t1: int) -> None:
        """One simulated day ``(t0, t1]``: acquisition, churn, win-back, updates."""
        rng = self.rng
        frac = (t1 - t0) / DAY_US
        # acquisition
        k = int(rng.poisson(self.acquire_per_day * frac))
        first_new = self.n  # customers created today are not updated or churned today
        if k:
            times = np.sort(self._times(t0, t1, k))
            idx = self._grow(k, int(times[0]))
            self.last_tx_us[idx] = times
            self._record(0, idx, times)
        active = np.flatnonzero(self.status[:first_new] == ACTIVE)
        churned = np.flatnonzero(self.status == CHURNED)  # before today: won back today maybe
        # churn: h * active expected, weighted by inactivity and loyalty, among customers
        # whose transactions are all released
        settled = active[self.last_pick_seq[active] < self.released_seq]
        if len(settled):
            inactive = np.maximum(t1 - self.last_tx_us[settled], 0) / DAY_US
            w = (1.0 + inactive / 7.0) * np.where(self.loyalty[settled], 0.5, 1.0)
            expected = self.hazard * frac * len(active)
            p = np.minimum(1.0, expected * w / w.sum())
            gone = settled[rng.random(len(settled)) < p]
            if len(gone):
                self.status[gone] = CHURNED
                self.churned_total += len(gone)
                when = self._times(np.maximum(self.last_tx_us[gone] + 1, t0), t1, len(gone))
                self.churned_us[gone] = when
                self._record(2, gone, when)
        # win-back (not of customers who churned today)
        back = churned[rng.random(len(churned)) < self.winback * frac]
        if len(back):
            self.status[back] = ACTIVE
            when = np.maximum(self._times(t0, t1, len(back)), self.churned_us[back] + 1)
            self._record(3, back, when)
        # updates: a new home store
        still = np.flatnonzero(self.status[:first_new] == ACTIVE)
        moved = still[rng.random(len(still)) < self.update_rate * frac]
        if len(moved):
            self.home_store[moved] = rng.integers(0, self.n_stores, len(moved))
            self._record(1, moved, self._times(t0, t1, len(moved)))
        self._sampler = None

    # -- the POS side -----------------------------------------------------------------------

    def pick(self, n: int, seq: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """``n`` active customers for transactions ``seq`` (by visit weight)."""
        if self._sampler is None:
            self._active_idx = np.flatnonzero(self.status == ACTIVE)
            weights = VISIT_WEIGHT[self.segment[self._active_idx]]
            self._sampler = AliasTable(weights) if len(weights) else None
        if self._sampler is None:
            raise RuntimeError("no active customer left")
        chosen = self._active_idx[self._sampler.sample(self.rng, n)]
        _set_latest(self.last_pick_seq, chosen, seq)
        return chosen

    def released(
        self, customers: npt.NDArray[np.int64], times: npt.NDArray[np.int64], end_seq: int
    ) -> None:
        """POS transactions up to ``end_seq`` were released; named ones at these times."""
        if len(customers):
            _set_latest(self.last_tx_us, customers, times)
        self.released_seq = max(self.released_seq, end_seq)


def _set_latest(
    target: npt.NDArray[np.int64], idx: npt.NDArray[np.int64], values: npt.NDArray[np.int64]
) -> None:
    """``target[i] = max(target[i], values of i)`` for non-decreasing ``values`` (seqs, event
    times): the last occurrence of each index wins. Cheaper than ``np.maximum.at``."""
    if not len(idx):
        return
    native = kernels.native()
    if native is not None and target.dtype == np.int64:  # a scatter-max: the same, whatever
        # the order, in one pass
        native.scatter_max(
            target,
            np.ascontiguousarray(idx, dtype=np.int64),
            np.ascontiguousarray(values, dtype=np.int64),
        )
        return
    rev = idx[::-1]
    uniq, first = np.unique(rev, return_index=True)
    target[uniq] = np.maximum(target[uniq], values[::-1][first])
