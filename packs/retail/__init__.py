"""Retail: a store chain selling a catalogue to a customer base.

This first slice simulates point-of-sale transactions: stores with registers and regional tax,
a catalogue with Zipf-like popularity and promotions, identified (loyalty) and anonymous
customers, baskets of line items. Volume follows the hour of day through the stream's rate
profile. Inventory drift, returns and churn come with the full pack.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.engine.blocks import DictColumn, ListColumn, RecordBlock
from datafactory.engine.rate import WeeklyProfile
from datafactory.engine.sampling import AliasTable
from datafactory.engine.seeding import SeedTree
from datafactory.pack import Pack, StreamGenerator, StreamSpec
from datafactory.packs.retail.customers import BASKET_FACTOR, EVENT_TYPES, SEGMENTS, Customers

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
PAYMENTS = ("card", "cash", "mobile_wallet", "gift_card")
# payment mix per channel (no cash online)
_PAYMENT_P = np.array(
    [[0.62, 0.18, 0.15, 0.05], [0.80, 0.00, 0.17, 0.03], [0.75, 0.00, 0.20, 0.05]]
)
REGIONS = ("north", "south", "east", "west", "central")
_REGION_TAX_BP = np.array([825, 700, 887, 725, 600])  # sales tax in basis points


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
    promo_share: float = Field(0.08, ge=0, le=1, description="share of SKUs on promotion")
    promo_discount: float = Field(0.2, ge=0, lt=1, description="discount of a promoted SKU")
    online_share: float = Field(0.15, ge=0, le=1, description="share of sales made online")
    click_collect_share: float = Field(
        0.05, ge=0, le=1, description="share of sales ordered online, collected in store"
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

    @model_validator(mode="after")
    def _shares(self) -> RetailParams:
        if self.online_share + self.click_collect_share > 1:
            raise ValueError("online_share + click_collect_share must be <= 1")
        return self


class RetailPack(Pack):
    name = "retail"
    description = "Store chain: POS transactions with baskets, promotions, loyalty customers."
    Params = RetailParams
    streams: ClassVar[dict[str, StreamSpec]] = {
        "pos_transaction": StreamSpec(
            "pos_transaction",
            "A paid basket at a register, online or click & collect.",
            DEFAULT_RATE,
        ),
        "customer_event": StreamSpec(
            "customer_event",
            "A customer created, updated, churned or reactivated (follows the sales).",
            driven=True,
        ),
    }

    def __init__(self, params: BaseModel, seeds: SeedTree) -> None:
        super().__init__(params, seeds)
        p = params if isinstance(params, RetailParams) else RetailParams.model_validate(params)
        self.p = p
        rng = seeds.rng("retail", "entities")
        # stores: size (sales weight), region, tax
        self.store_ids = tuple(f"S{i + 1:04d}" for i in range(p.stores))
        self.store_weight = rng.lognormal(0.0, 0.5, p.stores)
        self.store_sampler = AliasTable(self.store_weight)
        self.store_region = rng.integers(0, len(REGIONS), p.stores)
        self.store_tax_bp = _REGION_TAX_BP[self.store_region]
        # catalogue: list price in cents (log-normal around $8), Zipf popularity over a
        # random rank order, promotions
        self.sku_ids = tuple(f"SKU-{i + 1:07d}" for i in range(p.skus))
        self.sku_price = np.maximum(
            49, (np.round(rng.lognormal(np.log(800), 0.9, p.skus) / 10) * 10 - 1)
        ).astype(np.int64)
        ranks = rng.permutation(p.skus) + 1
        self.sku_popularity = ranks.astype(np.float64) ** -p.popularity_skew
        self.sku_sampler = AliasTable(self.sku_popularity)
        promo = rng.random(p.skus) < p.promo_share
        self.sku_discount_bp = np.where(promo, round(p.promo_discount * 10_000), 0).astype(np.int64)
        self.customers = Customers(p, seeds.rng("retail", "customers"), p.stores)
        self.currency_pool = (p.currency,)

    def advance(self, now_us: int) -> None:
        """Time-driven state (customers) up to the generation edge."""
        self.customers.advance(now_us)

    def stream(self, name: str) -> StreamGenerator:
        if name == "pos_transaction":
            return PosTransactions(self)
        if name == "customer_event":
            self.customers.emit = True
            return CustomerEvents(self)
        raise KeyError(f"retail has no stream {name!r}; streams: {sorted(self.streams)}")


class PosTransactions(StreamGenerator):
    def __init__(self, pack: RetailPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for("pos_transaction")
        self.rng = pack.seeds.rng("retail", "pos_transaction")
        p = pack.p
        self.channel_cdf = np.cumsum(
            [1 - p.online_share - p.click_collect_share, p.online_share, p.click_collect_share]
        )
        # the channels' payment CDFs laid end to end: channel c occupies [c, c + 1)
        self.payment_cdf = (np.cumsum(_PAYMENT_P, axis=1) + np.arange(3)[:, None]).ravel()

    def generate(self, n: int, seq_start: int, t_start_us: int, t_end_us: int) -> RecordBlock:
        pk, p, rng = self.pack, self.pack.p, self.rng
        pk.advance(t_start_us)
        seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
        span = max(t_end_us - t_start_us, 0)
        event_time = t_start_us + (np.arange(n, dtype=np.int64) * span) // max(n, 1)

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
        # online orders always carry the account; in store only loyalty members are named
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
        sku = pk.sku_sampler.sample(rng, m)
        qty = np.minimum(rng.geometric(0.65, m), 12).astype(np.int64)
        unit = pk.sku_price[sku]
        gross = qty * unit
        discount = (gross * pk.sku_discount_bp[sku] + 5_000) // 10_000
        line_total = gross - discount
        line = (np.arange(m, dtype=np.int32) - np.repeat(offsets[:-1], sizes) + 1).astype(np.int32)

        subtotal = np.add.reduceat(line_total, offsets[:-1]) if n else np.zeros(0, np.int64)
        tax = (subtotal * pk.store_tax_bp[store] + 5_000) // 10_000
        items = ListColumn(
            offsets,
            {
                "line": line,
                "sku": DictColumn(sku, pk.sku_ids),
                "quantity": qty.astype(np.int32),
                "unit_price": unit,
                "discount": discount,
                "line_total": line_total,
            },
        )
        return RecordBlock(
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
                "subtotal": subtotal,
                "tax": tax,
                "total": subtotal + tax,
            },
            nulls={"customer_id": ~known},
        )

    def released(self, block: RecordBlock) -> None:
        col = block.columns["customer_id"]
        assert isinstance(col, DictColumn)
        named = ~block.nulls["customer_id"]
        self.pack.customers.released(
            col.codes[named].astype(np.int64), block.event_time[named], int(block.seq[-1]) + 1
        )


class CustomerEvents(StreamGenerator):
    """``customer_event``: driven by the customer model's daily steps."""

    def __init__(self, pack: RetailPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for("customer_event")

    def poll(self, until_us: int | None, seq_start: int, limit: int) -> RecordBlock | None:
        people = self.pack.customers
        # only days the model has finished: their events are all known, so time order holds
        horizon = people.t_us if people.t_us is not None else 0
        ev = people.take_events(min(until_us if until_us is not None else 0, horizon), limit)
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
