"""Retail catalogue: categories, brands, prices, costs, regional popularity, promotions.

**Popularity**: every region ranks the catalogue its own way and a SKU's weight in a region is
``rank ** -popularity_skew`` (exactly Zipf over the region's ranks). The chain-wide order is
a weighted random order (categories people buy often rank higher on average); a region's
order perturbs it: ``log(rank) + Normal(0, regional_variation)``, re-ranked.

**Prices** change only at midnight (UTC), in daily steps at the generation edge: list price
changes (``price_change_rate`` per SKU-year, around ``+price_change_mean``; cost moves with
the price), and promotions that start (a discount for ``promo_days`` on average, so about
``promo_share`` of the catalogue is on promotion at any time) and end. A promoted SKU sells
``1 + promo_lift * discount`` times as often. Every state is kept as a *version* with the
time it took effect, so a transaction is priced by the version in effect at its event time,
whenever the pack learns that time (see ``PriceBook.at``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.engine.timeline import DAY_US, DailySteps

# name, share of SKUs, relative demand per SKU, median list price (cents), price spread
# (log sigma), gross margin, product nouns
CATEGORIES: tuple[tuple[str, float, float, int, float, float, tuple[str, ...]], ...] = (
    ("grocery", 0.26, 1.6, 349, 0.5, 0.28, ("Pasta", "Rice", "Cereal", "Coffee", "Soup")),
    ("fresh", 0.12, 2.0, 399, 0.5, 0.35, ("Apples", "Bread", "Milk", "Cheese", "Chicken")),
    ("beverages", 0.10, 1.5, 299, 0.5, 0.33, ("Cola", "Water", "Juice", "Lager", "Tea")),
    ("household", 0.10, 0.9, 549, 0.6, 0.36, ("Detergent", "Paper Towels", "Bin Bags")),
    ("personal_care", 0.10, 0.8, 649, 0.6, 0.42, ("Shampoo", "Toothpaste", "Deodorant")),
    ("health", 0.05, 0.6, 1099, 0.6, 0.40, ("Vitamins", "Pain Relief", "Plasters")),
    ("apparel", 0.08, 0.4, 2499, 0.7, 0.55, ("T-Shirt", "Socks", "Jeans", "Jacket")),
    ("home_garden", 0.07, 0.35, 2199, 0.8, 0.45, ("Mug Set", "Plant Pot", "Lamp", "Towel")),
    ("toys", 0.05, 0.35, 1799, 0.7, 0.45, ("Puzzle", "Building Set", "Doll", "Board Game")),
    ("electronics", 0.07, 0.25, 5499, 0.9, 0.22, ("Headphones", "Charger", "Speaker")),
)
CATEGORY_NAMES = tuple(c[0] for c in CATEGORIES)
_SIZES = ("Small", "Medium", "Large", "Family Size", "Twin Pack", "Value Pack")
_BRAND_A = ("North", "Blue", "Green", "Silver", "Oak", "River", "Sun", "Maple", "Stone",
            "Bright", "Golden", "Pure", "Urban", "Wild", "Harbor", "Prime")  # fmt: skip
_BRAND_B = ("field", "leaf", "crest", "line", "wood", "brook", "vale", "well", "works",
            "mark", "haven", "gate")  # fmt: skip
BRANDS = ("Own Label", *(a + b for a in _BRAND_A for b in _BRAND_B))
CHANGE_TYPES = ("listed", "list_price", "promotion_start", "promotion_end")


def shelf_price(cents: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Prices as shelves show them: x.49 or x.99, at least 0.49."""
    out: npt.NDArray[np.int64] = np.maximum(49, np.ceil(cents / 50) * 50 - 1).astype(np.int64)
    return out


class Catalogue:
    """What does not change: categories, brands, names, regional popularity order."""

    def __init__(self, p: Any, rng: np.random.Generator, n_regions: int) -> None:
        n = p.skus
        share = np.array([c[1] for c in CATEGORIES])
        self.category = rng.choice(len(CATEGORIES), n, p=share / share.sum()).astype(np.int32)
        # brands: a handful per category (own label in each), Zipf shares within it
        self.brand = np.zeros(n, dtype=np.int32)
        for c in range(len(CATEGORIES)):
            members = np.flatnonzero(self.category == c)
            k = min(len(BRANDS) - 1, max(3, len(members) // 40))
            pool = np.r_[0, 1 + rng.choice(len(BRANDS) - 1, k, replace=False)]
            w = 1.0 / np.arange(1, len(pool) + 1)
            self.brand[members] = pool[rng.choice(len(pool), len(members), p=w / w.sum())]
        median = np.array([c[3] for c in CATEGORIES], dtype=np.float64)[self.category]
        sigma = np.array([c[4] for c in CATEGORIES])[self.category]
        self.list_price = shelf_price(median * np.exp(rng.normal(0.0, sigma)))
        margin = np.clip(
            np.array([c[5] for c in CATEGORIES])[self.category] + rng.normal(0, 0.05, n), 0.05, 0.8
        )
        self.cost = np.maximum(1, np.round(self.list_price * (1 - margin))).astype(np.int64)
        nouns = [c[6] for c in CATEGORIES]
        noun = rng.integers(0, 1 << 30, n)
        size = rng.integers(0, len(_SIZES), n)
        self.names = tuple(
            f"{BRANDS[b]} {nouns[c][k % len(nouns[c])]} {_SIZES[s]}"
            for b, c, k, s in zip(
                self.brand.tolist(),
                self.category.tolist(),
                noun.tolist(),
                size.tolist(),
                strict=True,
            )
        )
        # chain-wide order: weighted random order by category demand (Efraimidis-Spirakis)
        demand = np.array([c[2] for c in CATEGORIES])[self.category]
        key = np.log(rng.random(n)) / demand
        base_rank = np.empty(n, dtype=np.float64)
        base_rank[np.argsort(-key, kind="stable")] = np.arange(1, n + 1)
        # each region re-ranks a perturbed order: popularity[r] is Zipf over region r's ranks
        self.popularity = np.empty((n_regions, n), dtype=np.float64)
        for r in range(n_regions):
            score = np.log(base_rank) + rng.normal(0.0, p.regional_variation, n)
            rank = np.empty(n, dtype=np.float64)
            rank[np.argsort(score, kind="stable")] = np.arange(1, n + 1)
            self.popularity[r] = rank**-p.popularity_skew


class PriceBook(DailySteps):
    """List prices, costs and promotions over time; ``price_change`` events."""

    def __init__(self, p: Any, rng: np.random.Generator, cat: Catalogue) -> None:
        super().__init__()
        self.p, self.rng, self.cat = p, rng, cat
        n = p.skus
        self.list_price = cat.list_price.copy()
        self.cost = cat.cost.copy()
        self.promo_bp = np.zeros(n, dtype=np.int64)  # discount in basis points
        self.promo_id = np.zeros(n, dtype=np.int64)  # 0: none
        self.promo_end_us = np.zeros(n, dtype=np.int64)
        self.next_promo = 1
        # versions: (effective from, list price, discount bp, promotion id)
        self.versions: list[tuple[int, Any, Any, Any]] = []
        self.emit = False
        self.changed = True  # demand weights need rebuilding
        self.starts_per_day = (
            p.promo_share * n / p.promo_days if p.promo_discount > 0 and p.promo_days else 0.0
        )
        self.reprices_per_day = p.price_change_rate * n / 365

    # -- state ------------------------------------------------------------------------------

    def lift(self) -> npt.NDArray[np.float64]:
        """Demand multiplier per SKU from its current promotion."""
        out: npt.NDArray[np.float64] = 1.0 + self.p.promo_lift * self.promo_bp / 10_000
        return out

    def _version(self, t_us: int) -> None:
        self.versions.append(
            (t_us, self.list_price.copy(), self.promo_bp.copy(), self.promo_id.copy())
        )
        self.changed = True

    def _record(self, t_us: int, sku: npt.NDArray[np.int64], kind: int, old: Any) -> None:
        if not self.emit or not len(sku):
            return
        k = len(sku)
        self.pending.add(
            t=np.full(k, t_us, dtype=np.int64),
            sku=sku.astype(np.int32),
            type=np.full(k, kind, dtype=np.int32),
            old_price=old,
            list_price=self.list_price[sku].copy(),
            cost=self.cost[sku].copy(),
            promo_bp=self.promo_bp[sku].copy(),
            promo_id=self.promo_id[sku].copy(),
            promo_end=self.promo_end_us[sku].copy(),
        )

    def _promote(self, sku: npt.NDArray[np.int64], t_us: int, days: npt.NDArray[np.int64]) -> None:
        p, rng = self.p, self.rng
        k = len(sku)
        d = np.round(p.promo_discount * rng.uniform(0.5, 1.5, k) * 20) / 20  # 5% steps
        self.promo_bp[sku] = np.round(np.clip(d, 0.05, 0.9) * 10_000).astype(np.int64)
        self.promo_id[sku] = np.arange(self.next_promo, self.next_promo + k)
        self.next_promo += k
        self.promo_end_us[sku] = (t_us // DAY_US + days) * DAY_US  # ends at a midnight
        self._record(t_us, sku, 2, self.list_price[sku].copy())

    def _start(self, now_us: int) -> None:
        n = self.p.skus
        self._record(now_us, np.arange(n, dtype=np.int64), 0, self.list_price.copy())
        # steady state from the first day: promo_share of the catalogue is on promotion
        if self.starts_per_day:
            k = min(n, round(self.p.promo_share * n))
            sku = np.sort(self.rng.choice(n, k, replace=False)).astype(np.int64)
            self._promote(sku, now_us, self.rng.integers(1, self.p.promo_days + 1, k))
        self._version(now_us)

    def _day(self, t0: int, t1: int) -> None:
        p, rng, n = self.p, self.rng, self.p.skus
        frac = (t1 - t0) / DAY_US
        changed = False
        ending = np.flatnonzero((self.promo_id > 0) & (self.promo_end_us <= t1))
        if len(ending):
            self.promo_bp[ending] = 0
            self.promo_id[ending] = 0
            self._record(t1, ending, 3, self.list_price[ending].copy())
            changed = True
        k = int(rng.poisson(self.starts_per_day * frac)) if self.starts_per_day else 0
        free = np.flatnonzero(self.promo_id == 0)
        k = min(k, len(free))
        if k:
            sku = np.sort(rng.choice(free, k, replace=False)).astype(np.int64)
            lo = max(1, p.promo_days // 2)
            self._promote(sku, t1, rng.integers(lo, 2 * p.promo_days - lo + 1, k))
            changed = True
        k = min(n, int(rng.poisson(self.reprices_per_day * frac)))
        if k:
            sku = np.sort(rng.choice(n, k, replace=False)).astype(np.int64)
            pct = np.clip(rng.normal(p.price_change_mean, 0.05, k), -0.3, 0.5)
            old = self.list_price[sku].copy()
            new = shelf_price(old * (1 + pct))
            moved = new != old
            sku, old, new = sku[moved], old[moved], new[moved]
            if len(sku):
                self.cost[sku] = np.maximum(1, np.round(self.cost[sku] * new / old)).astype(
                    np.int64
                )
                self.list_price[sku] = new
                self._record(t1, sku, 1, old)
                changed = True
        if changed:
            self._version(t1)

    # -- pricing ----------------------------------------------------------------------------

    def at(
        self, sku: npt.NDArray[np.int64], t_us: npt.NDArray[np.int64] | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(list price, discount bp, promotion id) of each line at its time (None: now).
        Versions no line can need any more are dropped (times only move forward)."""
        if t_us is None or len(self.versions) == 1:
            _, lp, bp, pid = self.versions[-1]
            return lp[sku], bp[sku], pid[sku]
        starts = np.array([v[0] for v in self.versions], dtype=np.int64)
        which = np.maximum(np.searchsorted(starts, t_us, side="right") - 1, 0)
        lp = np.empty(len(sku), dtype=np.int64)
        bp, pid = np.empty_like(lp), np.empty_like(lp)
        for v in np.unique(which).tolist():
            rows = which == v
            _, vlp, vbp, vpid = self.versions[v]
            s = sku[rows]
            lp[rows], bp[rows], pid[rows] = vlp[s], vbp[s], vpid[s]
        oldest = int(which.min()) if len(which) else 0
        if oldest:
            del self.versions[:oldest]
        return lp, bp, pid
