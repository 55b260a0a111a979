"""Retail: a store chain selling a catalogue to a customer base.

Streams: ``pos_transaction`` (paced: baskets at registers, online or click & collect; the
default rate follows hour of day, day of week and holidays), and, driven by the simulation,
``customer_event`` (created, updated, churned, reactivated: see ``customers.py``),
``inventory_movement`` (sales, receipts, cycle-count adjustments: see ``inventory.py``) and
``return`` (part of a line of an earlier transaction, refunded pro rata).

``price_change`` (the catalogue listed at the start, then list price changes and promotions
starting and ending, at midnight: see ``catalogue.py``); ``store`` (every store listed at the
start: region, format, opening hours, sales tax; then a region's tax revisions, at quarter
starts: see ``tax.py``).

Stores have a region (sales tax, SKU popularity) and a format (size, opening hours). A basket
is taxed at its store's rate at its time. An
in-store sale never falls outside its store's hours: one that would becomes an online order
fulfilled by that store (so at night the mix is all online). Prices and the opening hours
are applied again when the engine says when a sale happened (``released``): a sale is priced
by the list price and promotion in effect at its own event time.

State evolves in daily steps at the generation edge (``advance``), and from what the engine
released (``released``); driven events are released in time order once their day is done.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.engine.blocks import DictColumn, ListColumn, RecordBlock
from datafactory.engine.rate import WeeklyProfile
from datafactory.engine.sampling import AliasTable
from datafactory.engine.seeding import SeedTree
from datafactory.engine.timeline import PendingEvents
from datafactory.expect.questions import Question
from datafactory.pack import Pack, Shard, StreamGenerator, StreamSpec
from datafactory_retail import tax
from datafactory_retail.catalogue import (
    BRANDS,
    CATEGORY_NAMES,
    CHANGE_TYPES,
    Catalogue,
    PriceBook,
)
from datafactory_retail.customers import BASKET_FACTOR, EVENT_TYPES, SEGMENTS, Customers
from datafactory_retail.inventory import MOVEMENTS, REASONS, Inventory
from datafactory_retail.questions import QUESTIONS

# Relative sales by hour of day (store-local time, taken as UTC): quiet nights, a lunch peak,
# an after-work peak.
SALES_BY_HOUR: tuple[float, ...] = (
    0.05, 0.03, 0.02, 0.02, 0.03, 0.10, 0.30, 0.60, 0.90, 1.10, 1.30, 1.50,
    1.70, 1.60, 1.40, 1.30, 1.40, 1.60, 1.70, 1.50, 1.10, 0.70, 0.35, 0.15,
)  # fmt: skip

# Relative sales by day of week (Monday first): the weekend shop.
SALES_BY_WEEKDAY: tuple[float, ...] = (0.85, 0.85, 0.9, 0.95, 1.15, 1.45, 0.85)
# Days that sell differently every year (month-day, factor).
HOLIDAYS: tuple[tuple[str, float], ...] = (
    ("11-28", 2.2),  # around Black Friday
    ("12-23", 1.5),
    ("12-24", 1.7),
    ("12-25", 0.1),
    ("12-26", 1.3),
    ("12-31", 1.2),
    ("01-01", 0.3),
)
DEFAULT_RATE = WeeklyProfile.model_validate(
    {
        "profile": "weekly",
        "base": 200.0,
        "hourly": SALES_BY_HOUR,
        "weekday": SALES_BY_WEEKDAY,
        "holidays": [{"date": d, "factor": f} for d, f in HOLIDAYS],
    }
)

CHANNELS = ("store", "online", "click_and_collect")
RETURN_REASONS = ("damaged", "wrong_size", "not_as_described", "changed_mind")
PAYMENTS = ("card", "cash", "mobile_wallet", "gift_card")
# payment mix per channel (no cash online)
_PAYMENT_P = np.array(
    [[0.62, 0.18, 0.15, 0.05], [0.80, 0.00, 0.17, 0.03], [0.75, 0.00, 0.20, 0.05]]
)
REGIONS = ("north", "south", "east", "west", "central")
# name, share of stores, size (sales weight), opens, closes (hour of day, store-local = UTC)
STORE_FORMATS: tuple[tuple[str, float, float, int, int], ...] = (
    ("hypermarket", 0.15, 3.0, 8, 22),
    ("supermarket", 0.45, 1.0, 7, 22),
    ("convenience", 0.30, 0.35, 6, 23),
    ("superstore_24h", 0.10, 1.5, 0, 24),
)
STORE_FORMAT_NAMES = tuple(f[0] for f in STORE_FORMATS)
HOUR_US = 3_600_000_000


class RetailParams(BaseModel):
    """Parameters of the retail pack (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stores: int = Field(50, ge=1, le=100_000, description="number of stores", examples=[50])
    registers_per_store: int = Field(6, ge=1, le=99, description="registers in each store")
    skus: int = Field(5000, ge=1, le=5_000_000, description="catalogue size", examples=[5000])
    customers: int = Field(
        100_000, ge=1, le=50_000_000, description="loyalty customers", examples=[100000]
    )
    loyalty_share: float = Field(
        0.6, ge=0, le=1, description="share of in-store sales with a loyalty id"
    )
    popularity_skew: float = Field(
        1.07, gt=0, le=5, description="Zipf exponent of SKU popularity (higher: more skewed)"
    )
    basket_mean: float = Field(3.0, ge=1, le=50, description="mean line items per basket")
    regional_variation: float = Field(
        0.5, ge=0, le=5, description="how differently regions rank SKUs (0: the same order)"
    )
    promo_share: float = Field(
        0.08, ge=0, le=1, description="share of SKUs on promotion at any time"
    )
    promo_discount: float = Field(
        0.2, ge=0, lt=1, description="mean discount of a promotion (each 50-150% of it)"
    )
    promo_days: int = Field(14, ge=1, le=365, description="mean length of a promotion, in days")
    promo_lift: float = Field(
        3.0, ge=0, le=50, description="demand lift per unit of discount (20% off, 3: x1.6)"
    )
    price_change_rate: float = Field(
        1.0, ge=0, le=365, description="list price changes per SKU per year"
    )
    price_change_mean: float = Field(
        0.03, ge=-0.3, le=0.5, description="mean relative size of a list price change"
    )
    online_share: float = Field(
        0.15, ge=0, le=1, description="share of sales made online while stores are open"
    )
    click_collect_share: float = Field(
        0.05, ge=0, le=1, description="share of sales ordered online, collected in store"
    )
    seasonality_strength: float = Field(
        1.0,
        ge=0,
        le=1,
        description="how much of the hour/weekday/holiday curve the default rate follows (0: flat)",
    )
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code")
    churn_rate: float = Field(
        0.2, ge=0, lt=1, description="share of active customers who churn in a year"
    )
    winback_rate: float = Field(
        0.1, ge=0, lt=1, description="share of churned customers won back in a year"
    )
    acquisition_rate: float = Field(
        0.25, ge=0, le=100, description="new customers per year, as a share of `customers`"
    )
    customer_update_rate: float = Field(
        0.5, ge=0, le=365, description="profile updates (home store moves) per customer-year"
    )
    expected_daily_transactions: float = Field(
        17_280_000,
        gt=0,
        description="sizes opening stock and the first demand forecast (the default rate's day)",
    )
    initial_stock_days: float = Field(10, gt=0, le=365, description="opening stock, in days")
    shrinkage_rate: float = Field(
        0.015, ge=0, lt=1, description="share of stock lost unseen per year (theft, spoilage)"
    )
    lead_time_days: int = Field(2, ge=0, le=90, description="days from order to delivery")
    safety_days: float = Field(3, ge=0, le=90, description="reorder below this much cover")
    cover_days: float = Field(7, gt=0, le=365, description="order up to this much cover")
    cycle_count_days: int = Field(30, ge=1, le=365, description="every cell counted this often")
    return_rate: float = Field(0.03, ge=0, le=1, description="share of transactions with a return")
    return_window_days: float = Field(
        30, gt=0, le=365, description="returns come back within this many days"
    )

    @model_validator(mode="after")
    def _shares(self) -> RetailParams:
        if self.online_share + self.click_collect_share > 1:
            raise ValueError("online_share + click_collect_share must be <= 1")
        if self.initial_stock_days < self.lead_time_days + 1:
            raise ValueError(
                "initial_stock_days must be at least lead_time_days + 1: the opening stock has "
                "to last until the first delivery"
            )
        return self


class RetailPack(Pack):
    name = "retail"
    description = (
        "Store chain: sales, stock, returns, customers and prices that agree with each other."
    )
    Params = RetailParams
    streams: ClassVar[dict[str, StreamSpec]] = {
        "pos_transaction": StreamSpec(
            "pos_transaction",
            "A paid basket at a register, online or click & collect.",
            DEFAULT_RATE,
        ),
        "inventory_movement": StreamSpec(
            "inventory_movement",
            "Stock movements per store and SKU: sales, receipts, cycle-count adjustments.",
            driven=True,
        ),
        "return": StreamSpec(
            "return",
            "Part of a line of an earlier transaction brought back, refunded pro rata.",
            driven=True,
        ),
        "price_change": StreamSpec(
            "price_change",
            "The catalogue listed at the start; list price changes, promotions starting, ending.",
            driven=True,
        ),
        "customer_event": StreamSpec(
            "customer_event",
            "A customer created, updated, churned or reactivated (follows the sales).",
            driven=True,
        ),
        "store": StreamSpec(
            "store",
            "The stores, listed at the start (region, format, opening hours, sales tax), "
            "then each change as it takes effect (a region's sales tax, at a quarter start).",
            driven=True,
        ),
    }

    @classmethod
    def default_rate(cls, stream: str, params: BaseModel | None) -> Any:
        rate = super().default_rate(stream, params)
        if stream == "pos_transaction" and isinstance(params, RetailParams):
            return DEFAULT_RATE.model_copy(update={"strength": params.seasonality_strength})
        return rate

    shardable = True

    @classmethod
    def questions(cls, params: BaseModel) -> tuple[Question, ...]:
        return QUESTIONS

    @classmethod
    def max_shards(cls, params: BaseModel) -> int:
        return int(params.stores)  # type: ignore[attr-defined]

    def __init__(self, params: BaseModel, seeds: SeedTree, shard: Shard | None = None) -> None:
        super().__init__(params, seeds, shard)
        p = params if isinstance(params, RetailParams) else RetailParams.model_validate(params)
        # a shard: its own stores (global ids) with their own customers and stock; the
        # catalogue and its prices are the chain's, the same in every shard (shard 0 lists
        # their changes)
        sh = self.shard
        lo, hi = sh.range(p.stores)
        if hi <= lo:
            raise ValueError(f"retail: {sh.count} shards need at least as many stores")
        if sh.count > 1:
            share = (hi - lo) / p.stores
            c_lo, c_hi = sh.range(p.customers)
            p = p.model_copy(
                update={
                    "stores": hi - lo,
                    "customers": max(1, c_hi - c_lo),
                    "expected_daily_transactions": p.expected_daily_transactions * share,
                }
            )
            self.shard_share = share
        self.p = p
        tag = sh.tag
        rng = seeds.rng("retail", "entities", *tag)
        # stores: format (size, hours), region (tax, taste)
        self.store_ids = tuple(f"S{lo + i + 1:04d}" for i in range(p.stores))
        format_share = np.array([f[1] for f in STORE_FORMATS])
        self.store_format = rng.choice(len(STORE_FORMATS), p.stores, p=format_share).astype(
            np.int32
        )
        size = np.array([f[2] for f in STORE_FORMATS])[self.store_format]
        self.store_weight = rng.lognormal(0.0, 0.4, p.stores) * size
        self.store_sampler = AliasTable(self.store_weight)
        self.store_opens = np.array([f[3] for f in STORE_FORMATS])[self.store_format]
        self.store_closes = np.array([f[4] for f in STORE_FORMATS])[self.store_format]
        self.store_region = rng.integers(0, len(REGIONS), p.stores)
        # sales tax: each region's, revised at quarter starts (tax.py); one key for every shard
        self.tax_key = int(seeds.rng("retail", "tax").integers(1 << 62))
        # catalogue: categories, brands, prices and costs, each region's popularity order
        self.sku_ids = tuple(f"SKU-{i + 1:07d}" for i in range(p.skus))
        self.catalogue = Catalogue(p, seeds.rng("retail", "catalogue"), len(REGIONS))
        self.prices = PriceBook(p, seeds.rng("retail", "prices"), self.catalogue)
        self._sku_samplers: list[AliasTable] = []
        self.customers = Customers(
            p,
            seeds.rng("retail", "customers", *tag),
            p.stores,
            id_prefix="C" if sh.count == 1 else f"C{sh.index:03d}-",
        )
        mean_units = p.basket_mean * (1 / 0.65)  # quantities are geometric(0.65)
        pop = self.catalogue.popularity[self.store_region]  # stores x SKUs
        cell_share = (self.store_weight / self.store_weight.sum())[:, None] * (
            pop / pop.sum(axis=1, keepdims=True)
        )
        self.inventory = Inventory(
            p, seeds.rng("retail", "inventory", *tag), cell_share, mean_units
        )
        self.currency_pool = (p.currency,)
        self.returns_emit = False
        self.returns_rng = seeds.rng("retail", "returns", *tag)
        self.pending_returns = PendingEvents()
        self.stores_emit = False
        self.stores_listed = False
        self.pending_stores = PendingEvents()

    def begin(self, now_us: int) -> None:
        """The catalogue, the customers, the opening stock and the stores' listing begin
        with the run."""
        for model in (self.prices, self.customers, self.inventory):
            model.begin(now_us)
        if self.stores_emit and not self.stores_listed:
            n = len(self.store_ids)
            t = np.full(n, now_us, dtype=np.int64)
            bp = tax.rate_at(self.tax_key, self.store_region, t)
            self.pending_stores.add(t=t, store=np.arange(n), kind=np.zeros(n, np.int32), bp=bp)
            change = tax.changes(self.tax_key, self.store_region, now_us)
            kind = np.ones(len(change["t"]), np.int32)
            self.pending_stores.add(**change, kind=kind)  # announced as they take effect
            self.stores_listed = True

    def advance(self, now_us: int) -> None:
        """Time-driven state (prices, customers, stock) up to the generation edge."""
        self.prices.advance(now_us)
        self.customers.advance(now_us)
        self.inventory.advance(now_us)

    def sku_sampler(self, region: int) -> AliasTable:
        """SKUs as region ``region`` buys them now: its popularity x promotion lift."""
        if self.prices.changed or not self._sku_samplers:
            lift = self.prices.lift()
            self._sku_samplers = [AliasTable(w * lift) for w in self.catalogue.popularity]
            self.prices.changed = False
        return self._sku_samplers[region]

    def is_open(self, store: npt.NDArray[Any], t_us: npt.NDArray[np.int64]) -> Any:
        hour = (t_us // HOUR_US) % 24
        return (hour >= self.store_opens[store]) & (hour < self.store_closes[store])

    def stream(self, name: str) -> StreamGenerator:
        if name == "pos_transaction":
            return PosTransactions(self)
        if name == "return":
            self.returns_emit = True
            return Returns(self)
        if name == "inventory_movement":
            self.inventory.emit = True
            return InventoryMovements(self)
        if name == "price_change":
            self.prices.emit = self.shard.index == 0
            return PriceChanges(self)
        if name == "customer_event":
            self.customers.emit = True
            return CustomerEvents(self)
        if name == "store":
            self.stores_emit = True
            return Stores(self)
        raise KeyError(f"retail has no stream {name!r}; streams: {sorted(self.streams)}")


class PosTransactions(StreamGenerator):
    def __init__(self, pack: RetailPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for("pos_transaction")
        self.rng = pack.seeds.rng("retail", "pos_transaction", *pack.shard.tag)
        p = pack.p
        self.channel_cdf = np.cumsum(
            [1 - p.online_share - p.click_collect_share, p.online_share, p.click_collect_share]
        )
        # the channels' payment CDFs laid end to end: channel c occupies [c, c + 1)
        self.payment_cdf = (np.cumsum(_PAYMENT_P, axis=1) + np.arange(3)[:, None]).ravel()

    def generate(self, seq_start: int, event_time: npt.NDArray[np.int64]) -> RecordBlock:
        pk, p, rng = self.pack, self.pack.p, self.rng
        n = len(event_time)
        if n:  # the shop as it is at the block's first sale
            pk.advance(int(event_time[0]))
        seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
        event_time = np.asarray(event_time, dtype=np.int64)

        store = pk.store_sampler.sample(rng, n)
        drawn = np.searchsorted(self.channel_cdf, rng.random(n), side="right")
        channel = np.minimum(drawn, 2).astype(np.int32)  # float rounding at the top
        register = np.where(channel == 0, rng.integers(1, p.registers_per_store + 1, n), 0).astype(
            np.int32
        )
        u = channel + rng.random(n)
        payment = np.searchsorted(self.payment_cdf, u, side="right").astype(np.int32)
        payment -= channel * len(PAYMENTS)
        np.clip(payment, 0, len(PAYMENTS) - 1, out=payment)
        # the store is closed at that hour: an online order (as far as generation can tell
        # the time; the release checks again with the real one)
        _close_shop(pk.is_open(store, event_time), channel, register, payment)
        # online orders carry the account; in store only loyalty members are named
        known = (channel != 0) | (rng.random(n) < p.loyalty_share)
        people = pk.customers
        customer = np.zeros(n, dtype=np.int64)
        customer[known] = people.pick(int(known.sum()), seq[known])
        # a named customer's basket follows their segment
        factor = np.where(known, BASKET_FACTOR[people.segment[customer]], 1.0)

        sizes = 1 + rng.poisson(np.maximum(p.basket_mean * factor - 1, 0), n)
        np.minimum(sizes, 60, out=sizes)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        m = int(offsets[-1])
        # each line from its store's region's taste, promotions lifting demand
        line_store = np.repeat(store, sizes).astype(np.int64)
        line_region = pk.store_region[line_store]
        sku = np.empty(m, dtype=np.int64)
        for r in range(len(REGIONS)):
            rows = line_region == r
            k = int(np.count_nonzero(rows))
            if k:
                sku[rows] = pk.sku_sampler(r).sample(rng, k)
        qty = np.minimum(rng.geometric(0.65, m), 12).astype(np.int64)
        # stock: a line sells what the shelf has; an empty shelf is a lost sale
        inv = pk.inventory
        sold = inv.take(line_store * inv.n_skus + sku, qty)
        keep = sold > 0
        empty = np.add.reduceat(keep.astype(np.int64), offsets[:-1]) == 0 if n else keep[:0]
        if empty.any():  # a basket needs a line: one unit of the best-stocked SKU, in its
            # own store, else (bare shelves) ordered online from the best-stocked store; one
            # basket at a time, since each takes from the shelves (rare)
            shelves = inv.actual.reshape(-1, inv.n_skus)
            for row in np.flatnonzero(empty).tolist():
                if shelves[store[row]].max() <= 0:
                    store[row], channel[row], register[row] = (
                        int(shelves.sum(axis=1).argmax()),
                        1,
                        0,
                    )
                at = int(offsets[row])
                line_store[at] = store[row]
                sku[at] = int(shelves[store[row]].argmax())
                qty[at] = 1
                sold[at] = inv.take(
                    line_store[at : at + 1] * inv.n_skus + sku[at : at + 1], qty[at : at + 1]
                )[0]
                keep[at] = sold[at] > 0
        sizes = np.add.reduceat(keep.astype(np.int64), offsets[:-1]) if n else sizes
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        m = int(offsets[-1])
        sku, qty = sku[keep], sold[keep]
        line = (np.arange(m, dtype=np.int32) - np.repeat(offsets[:-1], sizes) + 1).astype(np.int32)
        if (sizes == 0).any():
            raise RuntimeError(
                "retail: every store is out of stock; raise initial_stock_days or "
                "expected_daily_transactions, or lower shrinkage_rate"
            )
        items = ListColumn(
            offsets,
            {
                "line": line,
                "sku": DictColumn(sku.astype(np.int32), pk.sku_ids),
                "category": DictColumn(pk.catalogue.category[sku], CATEGORY_NAMES),
                "quantity": qty.astype(np.int32),
            },
        )
        block = RecordBlock(
            stream="retail.pos_transaction",
            seq=seq,
            event_time=event_time,
            key=store.astype(np.int64),
            columns={
                "transaction_id": seq + 1_000_000_001,
                "store_id": DictColumn(store, pk.store_ids),
                "register_id": register,
                "customer_id": DictColumn(customer.astype(np.int32), people.pool),
                "channel": DictColumn(channel, CHANNELS),
                "payment_method": DictColumn(payment, PAYMENTS),
                "currency": DictColumn(np.zeros(n, dtype=np.int32), pk.currency_pool),
                "items": items,
            },
            nulls={"customer_id": ~known},
        )
        # a block can span a day's end: days that ended by its last sale are simulated first,
        # so the prices in effect at every sale are known
        if n:
            pk.advance(int(event_time[-1]))
        self._finish(block)
        return block

    def _finish(self, block: RecordBlock) -> None:
        """What depends on when a sale happens: store hours (an in-store sale when its store
        is closed becomes an online order it fulfils; if the customer had no loyalty card,
        a guest checkout) and prices (the version in effect at the sale's time)."""
        pk, cols = self.pack, dict(block.columns)
        store_col, channel = cols["store_id"], cols["channel"]
        payment, items = cols["payment_method"], cols["items"]
        assert isinstance(store_col, DictColumn) and isinstance(channel, DictColumn)
        assert isinstance(payment, DictColumn) and isinstance(items, ListColumn)
        store = store_col.codes.astype(np.int64)
        is_open = pk.is_open(store, block.event_time)
        if ((channel.codes == 0) & ~is_open).any():
            ch, pay = channel.codes.copy(), payment.codes.copy()
            register = np.array(cols["register_id"], copy=True)
            _close_shop(is_open, ch, register, pay)
            cols["channel"] = DictColumn(ch, CHANNELS)
            cols["payment_method"] = DictColumn(pay, PAYMENTS)
            cols["register_id"] = register
        sizes = np.diff(items.offsets)
        sku_col = items.children["sku"]
        assert isinstance(sku_col, DictColumn)
        sku = sku_col.codes.astype(np.int64)
        qty = np.asarray(items.children["quantity"], dtype=np.int64)
        unit, bp, promo = pk.prices.at(sku, np.repeat(block.event_time, sizes))
        gross = qty * unit
        discount = (gross * bp + 5_000) // 10_000
        line_total = gross - discount
        kids = dict(items.children)
        kids.update(unit_price=unit, discount=discount, line_total=line_total, promotion_id=promo)
        cols["items"] = ListColumn(items.offsets, kids, {"promotion_id": promo == 0})
        n = len(block)
        subtotal = np.add.reduceat(line_total, items.offsets[:-1]) if n else np.zeros(0, np.int64)
        bp = tax.rate_at(pk.tax_key, pk.store_region[store], block.event_time)
        tax_cents = (subtotal * bp + 5_000) // 10_000
        cols.update(subtotal=subtotal, tax=tax_cents, total=subtotal + tax_cents)
        block.columns = cols

    def released(self, block: RecordBlock) -> None:
        col = block.columns["customer_id"]
        assert isinstance(col, DictColumn)
        named = ~block.nulls["customer_id"]
        self.pack.customers.released(
            col.codes[named].astype(np.int64), block.event_time[named], int(block.seq[-1]) + 1
        )
        if self.pack.returns_emit:
            self._returns(block)
        inv = self.pack.inventory
        if inv.emit:  # one sale movement per line, at the transaction's time
            items, store = block.columns["items"], block.columns["store_id"]
            assert isinstance(items, ListColumn) and isinstance(store, DictColumn)
            sku = items.children["sku"]
            assert isinstance(sku, DictColumn)
            lens = np.diff(items.offsets)
            cell = np.repeat(store.codes.astype(np.int64), lens) * inv.n_skus + sku.codes
            qty = np.asarray(items.children["quantity"], dtype=np.int64)
            inv.sales_released(cell, qty, np.repeat(block.event_time, lens))

    def _returns(self, block: RecordBlock) -> None:
        """Some released transactions come back later: part of one line each."""
        pk = self.pack
        rng, p = pk.returns_rng, pk.p
        n = len(block)
        hit = np.flatnonzero(rng.random(n) < p.return_rate)
        if not len(hit):
            return
        items = block.columns["items"]
        assert isinstance(items, ListColumn)
        lens = np.diff(items.offsets)[hit]
        at = items.offsets[:-1][hit] + (rng.random(len(hit)) * lens).astype(np.int64)
        qty_line = np.asarray(items.children["quantity"], dtype=np.int64)[at]
        qty = 1 + (rng.random(len(hit)) * qty_line).astype(np.int64)
        total = np.asarray(items.children["line_total"], dtype=np.int64)[at]
        sku = items.children["sku"]
        store, customer = block.columns["store_id"], block.columns["customer_id"]
        assert isinstance(sku, DictColumn) and isinstance(store, DictColumn)
        assert isinstance(customer, DictColumn)
        window = int(p.return_window_days * 86_400_000_000)
        delay = 3_600_000_000 + (rng.random(len(hit)) * max(window - 3_600_000_000, 1)).astype(
            np.int64
        )
        pk.pending_returns.add(
            t=block.event_time[hit] + delay,
            tx=np.asarray(block.columns["transaction_id"], dtype=np.int64)[hit],
            line=np.asarray(items.children["line"], dtype=np.int64)[at],
            store=store.codes[hit].astype(np.int32),
            sku=sku.codes[at].astype(np.int32),
            qty=qty,
            refund=total * qty // qty_line,  # pro rata, to the cent (down)
            customer=customer.codes[hit].astype(np.int32),
            anonymous=block.nulls["customer_id"][hit].copy(),
            # rng.choice(4, n, p=RETURN_REASON_P)'s own steps, without its checks per block
            reason=np.searchsorted(_REASON_CDF, rng.random(len(hit)), side="right").astype(
                np.int32
            ),
        )


RETURN_REASON_P = (0.2, 0.3, 0.15, 0.35)
_REASON_CDF = np.cumsum(RETURN_REASON_P) / np.cumsum(RETURN_REASON_P)[-1]


def _close_shop(is_open: Any, channel: Any, register: Any, payment: Any) -> None:
    """In-store sales where the store is closed become online orders it fulfils (in place)."""
    shut = (channel == 0) & ~is_open
    channel[shut], register[shut] = 1, 0
    payment[shut & (payment == 1)] = 0  # no cash online: card


class Returns(StreamGenerator):
    """``return``: derived from released transactions; released when their time comes."""

    def __init__(self, pack: RetailPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for("return")

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        pk = self.pack
        if until_us is None:
            return None
        c = pk.pending_returns.take(until_us, limit)  # returns come when their time comes
        if c is None:
            return None
        due = len(c["t"])
        return RecordBlock(
            stream="retail.return",
            seq=np.arange(seq_start, seq_start + due, dtype=np.int64),
            event_time=c["t"],
            key=c["store"].astype(np.int64),
            columns={
                "transaction_id": c["tx"],
                "line": c["line"].astype(np.int32),
                "store_id": DictColumn(c["store"], pk.store_ids),
                "sku": DictColumn(c["sku"], pk.sku_ids),
                "quantity": c["qty"].astype(np.int32),
                "refund": c["refund"],
                "customer_id": DictColumn(c["customer"], pk.customers.pool),
                "reason": DictColumn(c["reason"], RETURN_REASONS),
            },
            nulls={"customer_id": c["anonymous"]},
        )


STORE_CHANGES = ("listed", "tax_changed")


class Stores(StreamGenerator):
    """``store``: this shard's stores, listed when the run begins; then each change as it
    takes effect (a region's sales tax revised at a quarter's start: every store of it)."""

    def __init__(self, pack: RetailPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for("store")

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        pk = self.pack
        ev = pk.pending_stores.take(until_us, limit) if until_us is not None else None
        if ev is None:
            return None
        store = ev["store"].astype(np.int32)
        fmt = pk.store_format[store]
        return RecordBlock(
            stream="retail.store",
            seq=np.arange(seq_start, seq_start + len(store), dtype=np.int64),
            event_time=ev["t"],
            key=store.astype(np.int64),
            columns={
                "store_id": DictColumn(store, pk.store_ids),
                "change_type": DictColumn(ev["kind"].astype(np.int32), STORE_CHANGES),
                "region": DictColumn(pk.store_region[store].astype(np.int32), REGIONS),
                "format": DictColumn(fmt.astype(np.int32), STORE_FORMAT_NAMES),
                "opens_at": pk.store_opens[store].astype(np.int32),
                "closes_at": pk.store_closes[store].astype(np.int32),
                "tax_rate": ev["bp"].astype(np.int64),  # basis points: scale 4
                "registers": np.full(len(store), pk.p.registers_per_store, dtype=np.int32),
            },
        )


class PriceChanges(StreamGenerator):
    """``price_change``: the price book's changes, released once their day is simulated."""

    def __init__(self, pack: RetailPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for("price_change")

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        pk = self.pack
        ev = pk.prices.take_due(until_us, limit, final)
        if ev is None:
            return None
        n = len(ev["t"])
        sku = ev["sku"]
        cat = pk.catalogue
        no_promo = ev["promo_id"] == 0
        return RecordBlock(
            stream="retail.price_change",
            seq=np.arange(seq_start, seq_start + n, dtype=np.int64),
            event_time=ev["t"],
            key=sku.astype(np.int64),
            columns={
                "sku": DictColumn(sku, pk.sku_ids),
                "change_type": DictColumn(ev["type"], CHANGE_TYPES),
                "product_name": DictColumn(sku, cat.names),
                "category": DictColumn(cat.category[sku], CATEGORY_NAMES),
                "brand": DictColumn(cat.brand[sku], BRANDS),
                "previous_price": ev["old_price"],
                "list_price": ev["list_price"],
                "unit_cost": ev["cost"],
                "promotion_id": ev["promo_id"],
                "discount_rate": ev["promo_bp"],
                "promotion_ends_at": ev["promo_end"],
                "shelf_price": ev["list_price"]
                - (ev["list_price"] * ev["promo_bp"] + 5_000) // 10_000,
            },
            nulls={
                "previous_price": ev["type"] == 0,
                "promotion_id": no_promo,
                "discount_rate": no_promo,
                "promotion_ends_at": no_promo,
            },
        )


class CustomerEvents(StreamGenerator):
    """``customer_event``: driven by the customer model's daily steps."""

    def __init__(self, pack: RetailPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for("customer_event")

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        people = self.pack.customers
        ev = people.take_due(until_us, limit, final)
        if ev is None:
            return None
        n = len(ev["t"])
        seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
        return RecordBlock(
            stream="retail.customer_event",
            seq=seq,
            event_time=ev["t"],
            key=ev["customer"],
            columns={
                "customer_id": DictColumn(ev["customer"].astype(np.int32), people.pool),
                "event_type": DictColumn(ev["type"], EVENT_TYPES),
                "segment": DictColumn(ev["segment"], SEGMENTS),
                "loyalty_member": ev["loyalty"],
                "home_store_id": DictColumn(ev["store"], self.pack.store_ids),
                "days_inactive": np.maximum(ev["inactive_days"], 0),
            },
        )


class InventoryMovements(StreamGenerator):
    """``inventory_movement``: sales (from released POS lines) and the inventory model's
    receipts and adjustments, in time order, once their day is complete."""

    def __init__(self, pack: RetailPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for("inventory_movement")

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        inv = self.pack.inventory
        ev = inv.take_due(until_us, limit, final)
        if ev is None:
            return None
        n = len(ev["t"])
        store = (ev["cell"] // inv.n_skus).astype(np.int32)
        return RecordBlock(
            stream="retail.inventory_movement",
            seq=np.arange(seq_start, seq_start + n, dtype=np.int64),
            event_time=ev["t"],
            key=store.astype(np.int64),
            columns={
                "store_id": DictColumn(store, self.pack.store_ids),
                "sku": DictColumn((ev["cell"] % inv.n_skus).astype(np.int32), self.pack.sku_ids),
                "movement_type": DictColumn(ev["type"], MOVEMENTS),
                "quantity": ev["qty"],
                "reason": DictColumn(ev["reason"], REASONS),
            },
        )
