"""Retail inventory: on-hand per store x SKU, drifting away from the books.

Two ledgers per store x SKU: ``actual`` (what is on the shelf) and ``book`` (what the system
of record believes). A sale takes from both and never exceeds ``actual`` (what is missing is
a lost sale). Shrinkage (theft, spoilage, damage) takes from ``actual`` only, unseen. A cycle
count of a cell (every ``cycle_count_days``, a rotating share of cells each day) reveals the
drift: an ``adjustment`` of exactly minus the shrinkage since the last count. Replenishment:
each day, where ``book + on order`` is below the reorder point (forecast x (lead time +
safety days)) an order is placed up to forecast x (lead time + cover days); it arrives
``lead_time_days`` later as a ``receipt``. The forecast is an exponentially weighted mean of
daily sales, seeded from ``expected_daily_transactions``.

Like the customer model, daily steps run at the generation edge and their movements are
released once the day is complete; sales movements come from released POS lines.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.engine.timeline import DAY_US, DailySteps
from datafactory_retail import kernels

MOVEMENTS = ("sale", "receipt", "adjustment")
REASONS = ("sale", "opening_stock", "replenishment", "cycle_count")


class Inventory(DailySteps):
    def __init__(
        self,
        p: Any,
        rng: np.random.Generator,
        cell_share: npt.NDArray[np.float64],
        mean_units_per_tx: float,
    ) -> None:
        """``cell_share``: stores x SKUs, each cell's share of the chain's units (sums to 1)."""
        super().__init__()
        self.p = p
        self.rng = rng
        self.n_skus = cell_share.shape[1]
        demand = p.expected_daily_transactions * mean_units_per_tx * cell_share
        self.forecast = demand.ravel()  # units per day per cell (store-major)
        opening = np.ceil(self.forecast * p.initial_stock_days).astype(np.int64) + 2
        self.actual = opening.copy()
        self.book = opening.copy()
        self.on_order = np.zeros_like(opening)
        self.sold_today = np.zeros_like(opening)
        self.demand_today = np.zeros_like(opening)  # asked for, sold or not (uncensored)
        self.shrink_since_count = np.zeros_like(opening)
        self.orders: list[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        self.daily_shrink = -math.expm1(math.log1p(-p.shrinkage_rate) / 365)
        self.day_index = 0
        self.emit = False
        self.lost_units = 0
        self.shrunk_total = 0
        self.adjusted_total = 0
        self._opening = opening

    # -- the POS side -----------------------------------------------------------------------

    def take(
        self, cell: npt.NDArray[np.int64], qty: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Sell ``qty`` of each line's cell, in line order, never more than is on the shelf;
        returns what was sold per line (0: a lost sale)."""
        if not len(cell):
            return np.zeros(0, dtype=np.int64)
        native = kernels.native()
        if native is not None and self.actual.dtype == np.int64:  # the same in one pass
            # (blocks are small and many; the ledgers are int64, as the C code reads them)
            sold = np.empty(len(cell), dtype=np.int64)
            self.lost_units += native.take(
                np.ascontiguousarray(cell, dtype=np.int64),
                np.ascontiguousarray(qty, dtype=np.int64),
                self.actual, self.book, self.sold_today, self.demand_today, sold,
            )  # fmt: skip
            return sold
        return self._take(cell, qty)

    def _take(
        self, cell: npt.NDArray[np.int64], qty: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """``take`` in numpy."""
        order = np.argsort(cell, kind="stable")
        c, q = cell[order], qty[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        cum = np.cumsum(q)
        before = cum - q - np.repeat(np.r_[0, cum[starts[1:] - 1]], np.diff(np.r_[starts, len(c)]))
        sold_sorted = np.clip(self.actual[c] - before, 0, q)
        sold = np.empty_like(sold_sorted)
        sold[order] = sold_sorted
        # per distinct cell (the sort already groups them): cheaper than ufunc.at
        uniq = c[starts]
        sums = np.add.reduceat(sold_sorted, starts)
        self.actual[uniq] -= sums
        self.book[uniq] -= sums
        self.sold_today[uniq] += sums
        self.demand_today[uniq] += np.add.reduceat(q, starts)
        self.lost_units += int((qty - sold).sum())
        out: npt.NDArray[np.int64] = sold.astype(np.int64)
        return out

    def sales_released(
        self, cell: npt.NDArray[np.int64], qty: npt.NDArray[np.int64], times: npt.NDArray[np.int64]
    ) -> None:
        if self.emit and len(cell):
            self._record(
                times, cell, np.zeros(len(cell), np.int32), -qty, np.zeros(len(cell), np.int32)
            )

    # -- time -------------------------------------------------------------------------------

    def _record(self, t: Any, cell: Any, kind: Any, qty: Any, reason: Any) -> None:
        self.pending.add(
            t=np.asarray(t, dtype=np.int64),
            cell=np.asarray(cell, dtype=np.int64),
            type=np.asarray(kind, dtype=np.int32),
            qty=np.asarray(qty, dtype=np.int64),
            reason=np.asarray(reason, dtype=np.int32),
        )

    def _start(self, now_us: int) -> None:
        if self.emit:  # the opening stock, so the movements replay to the books
            cells = np.arange(len(self.book), dtype=np.int64)
            n = len(cells)
            self._record(
                np.full(n, now_us),
                cells,
                np.ones(n, np.int32),
                self._opening,
                np.ones(n, np.int32),
            )

    def _day(self, t0: int, t1: int) -> None:
        rng, p = self.rng, self.p
        # arrivals
        due = [o for o in self.orders if o[0] <= t1]
        self.orders = [o for o in self.orders if o[0] > t1]
        for when, cells, qty in due:
            np.add.at(self.actual, cells, qty)
            np.add.at(self.book, cells, qty)
            np.subtract.at(self.on_order, cells, qty)
            if self.emit:
                n = len(cells)
                self._record(
                    np.full(n, when), cells, np.ones(n, np.int32), qty, np.full(n, 2, np.int32)
                )
        # shrinkage: unseen
        loss = rng.binomial(np.maximum(self.actual, 0), self.daily_shrink * (t1 - t0) / DAY_US)
        self.actual -= loss
        self.shrink_since_count += loss
        self.shrunk_total += int(loss.sum())
        # cycle counts: a rotating share of cells, every `cycle_count_days`
        cells = np.arange(len(self.book), dtype=np.int64)
        counted = cells[(cells + self.day_index) % p.cycle_count_days == 0]
        delta = self.actual[counted] - self.book[counted]
        drift = counted[delta != 0]
        if len(drift):
            d = self.actual[drift] - self.book[drift]
            assert np.array_equal(d, -self.shrink_since_count[drift])  # the books' only blind spot
            self.book[drift] = self.actual[drift]
            self.adjusted_total += int(d.sum())
            if self.emit:
                n = len(drift)
                times = t0 + (rng.random(n) * (t1 - t0)).astype(np.int64)
                self._record(times, drift, np.full(n, 2, np.int32), d, np.full(n, 3, np.int32))
        self.shrink_since_count[counted] = 0
        # forecast, then replenishment orders
        # forecast demand, not sales: a stockout must not teach it to order less
        self.forecast = 0.8 * self.forecast + 0.2 * self.demand_today
        self.sold_today[:] = 0
        self.demand_today[:] = 0
        position = self.book + self.on_order
        rop = self.forecast * (p.lead_time_days + p.safety_days)
        need = position < rop
        if need.any():
            target = np.ceil(self.forecast[need] * (p.lead_time_days + p.cover_days)).astype(
                np.int64
            )
            qty = np.maximum(target - position[need], 1)
            cells_n = np.flatnonzero(need)
            self.on_order[cells_n] += qty
            self.orders.append((t1 + p.lead_time_days * DAY_US, cells_n, qty))
        self.day_index += 1
