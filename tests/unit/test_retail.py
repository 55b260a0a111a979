"""Retail POS: invariants of every transaction, store hours, the catalogue's popularity by
region, promotions and prices in effect at each sale's time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from datafactory.engine.blocks import DictColumn, ListColumn
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.drive import uniform_times
from datafactory_retail import RetailPack, RetailParams

NOON = 1_767_787_200_000_000  # Wednesday 2026-01-07 12:00 UTC: every store is open
HOUR = 3_600_000_000
DAY = 24 * HOUR


@pytest.fixture(scope="module")
def block():  # type: ignore[no-untyped-def]
    pack = RetailPack(RetailParams(stores=20, skus=2000, customers=5000), SeedTree(11))
    return pack.stream("pos_transaction").generate(0, uniform_times(50_000, NOON, NOON + HOUR))


def test_money_adds_up_to_the_cent(block) -> None:  # type: ignore[no-untyped-def]
    items = block.columns["items"]
    assert isinstance(items, ListColumn)
    c = items.children
    assert np.array_equal(c["line_total"], c["quantity"] * c["unit_price"] - c["discount"])
    assert (c["discount"] >= 0).all() and (c["line_total"] > 0).all()
    sums = np.add.reduceat(c["line_total"], items.offsets[:-1])
    assert np.array_equal(block.columns["subtotal"], sums)
    assert np.array_equal(block.columns["total"], block.columns["subtotal"] + block.columns["tax"])
    rate = block.columns["tax"] / block.columns["subtotal"]
    assert ((rate > 0.05) & (rate < 0.095)).all()


def test_lines_are_numbered_and_baskets_non_empty(block) -> None:  # type: ignore[no-untyped-def]
    items = block.columns["items"]
    sizes = np.diff(items.offsets)
    assert sizes.min() >= 1
    assert 2.5 < sizes.mean() < 3.5  # basket_mean 3
    first = items.children["line"][items.offsets[:-1]]
    assert (first == 1).all()


def test_channels_registers_and_customers(block) -> None:  # type: ignore[no-untyped-def]
    ch = block.columns["channel"]
    assert isinstance(ch, DictColumn)
    online = ch.codes != 0
    assert (block.columns["register_id"][online] == 0).all()
    assert (block.columns["register_id"][~online] >= 1).all()
    anon = block.nulls["customer_id"]
    assert not anon[online].any()  # online orders always name the customer
    assert 0.35 < anon[~online].mean() < 0.45  # loyalty_share 0.6 in store
    pay = block.columns["payment_method"]
    assert not (pay.codes[online] == 1).any()  # no cash online
    assert ch.codes.max() <= 2 and 0.12 < (ch.codes == 1).mean() < 0.18


def _lines_by_region(skew: float, variation: float, lines: int) -> tuple[RetailPack, list]:  # type: ignore[type-arg]
    """SKU counts per region from ``lines`` sold lines (no promotions, ample stock)."""
    pack = RetailPack(
        RetailParams(
            stores=25, skus=2000, customers=5000, popularity_skew=skew,
            regional_variation=variation, promo_share=0, initial_stock_days=365,
        ),
        SeedTree(4),
    )  # fmt: skip
    gen = pack.stream("pos_transaction")
    counts = [np.zeros(2000) for _ in range(5)]
    seq = 0
    while sum(c.sum() for c in counts) < lines:
        b = gen.generate(seq, uniform_times(20_000, NOON, NOON + HOUR))
        seq += 20_000
        items = b.columns["items"]
        region = pack.store_region[np.repeat(b.columns["store_id"].codes, np.diff(items.offsets))]
        sku = items.children["sku"].codes
        qty = np.asarray(items.children["quantity"])
        for r in range(5):
            counts[r] += np.bincount(sku[region == r], weights=qty[region == r] > 0, minlength=2000)
    return pack, counts


@pytest.mark.parametrize("skew", [0.8, 1.3])
def test_sku_popularity_follows_the_configured_skew_in_every_region(skew: float) -> None:
    """Each region's rank-frequency slope over its top 200 SKUs matches the Zipf exponent
    (+-0.12); regions rank SKUs differently, but alike (rank correlation 0.5-0.99)."""
    pack, counts = _lines_by_region(skew, 0.5, 400_000)
    ranks = np.log(np.arange(1, 201))
    tops = []
    for c in counts:
        order = np.argsort(-c, kind="stable")
        slope = np.polyfit(ranks, np.log(c[order[:200]]), 1)[0]
        assert abs(slope + skew) < 0.12, (skew, slope)
        tops.append(order)
    # the configured popularity itself: region 0 vs region 1 rank correlation
    pop = pack.catalogue.popularity
    rank0, rank1 = np.argsort(np.argsort(-pop[0])), np.argsort(np.argsort(-pop[1]))
    rho = np.corrcoef(rank0, rank1)[0, 1]
    assert 0.5 < rho < 0.99
    # and the sales show it: each region's best seller is not the same everywhere
    assert len({int(o[0]) for o in tops}) > 1


def test_regional_variation_zero_means_one_order() -> None:
    pack = RetailPack(RetailParams(skus=500, regional_variation=0), SeedTree(2))
    pop = pack.catalogue.popularity
    assert all(np.array_equal(pop[0], pop[r]) for r in range(1, 5))


def test_catalogue_prices_costs_and_categories() -> None:
    pack = RetailPack(RetailParams(skus=5000), SeedTree(3))
    cat = pack.catalogue
    cents = cat.list_price % 100
    assert set(np.unique(cents).tolist()) <= {49, 99}  # shelf prices
    assert (cat.cost < cat.list_price).all() and (cat.cost > 0).all()
    electronics, grocery = cat.category == 9, cat.category == 0
    assert np.median(cat.list_price[electronics]) > 5 * np.median(cat.list_price[grocery])
    margin = 1 - cat.cost / cat.list_price
    assert margin[electronics].mean() < margin[grocery].mean() < margin[cat.category == 6].mean()
    assert len(set(cat.names)) > 1000 and all(n.split()[0] for n in cat.names)


def test_store_hours_hold_and_the_night_is_online() -> None:
    """At 03:00 only 24h stores sell in store; every other sale is online or click & collect
    (anonymous online sales are guest checkouts). At noon the configured mix holds."""
    pack = RetailPack(RetailParams(stores=40, skus=500, customers=2000), SeedTree(6))
    gen = pack.stream("pos_transaction")
    night = gen.generate(0, uniform_times(20_000, NOON - 9 * HOUR, NOON - 9 * HOUR))
    ch = night.columns["channel"].codes
    store = night.columns["store_id"].codes
    in_store = ch == 0
    assert in_store.any()
    assert (pack.store_closes[store[in_store]] == 24).all()
    assert (pack.store_closes[store[~in_store]] < 24).any()
    assert (night.columns["register_id"][~in_store] == 0).all()
    assert not (night.columns["payment_method"].codes[~in_store] == 1).any()  # no cash online
    noon = gen.generate(20_000, uniform_times(20_000, NOON, NOON))
    assert 0.75 < (noon.columns["channel"].codes == 0).mean() < 0.85
    # one block over a night and a noon: each sale meets the hours of its own time
    times = np.sort(np.tile([NOON - 9 * HOUR, NOON], 5000))
    mixed = gen.generate(40_000, times)
    ch, store = mixed.columns["channel"].codes, mixed.columns["store_id"].codes
    at_night = (mixed.event_time == NOON - 9 * HOUR) & (ch == 0)
    assert at_night.any() and (pack.store_closes[store[at_night]] == 24).all()
    assert 0.75 < (ch[mixed.event_time == NOON] == 0).mean() < 0.85


def test_a_sale_is_priced_by_the_version_in_effect_at_its_time() -> None:
    """Promotions start and end and list prices change at midnight; a block whose sales
    straddle a midnight prices each sale by the version in effect at its own time."""
    p = RetailParams(skus=300, customers=1000, promo_share=0.3, promo_days=2,
                     price_change_rate=50)  # fmt: skip
    pack = RetailPack(p, SeedTree(8))
    gen = pack.stream("pos_transaction")
    pack.prices.emit = True
    t = NOON
    gen.generate(0, uniform_times(10, t, t))  # starts the price book
    day0 = pack.prices.versions[-1]
    # 2,500 sales at 23:00, 2,500 just after midnight
    times = np.repeat(np.array([t + 11 * HOUR, t + 12 * HOUR + 1], dtype=np.int64), 2500)
    block = gen.generate(10, times)
    day1 = pack.prices.versions[-1]
    assert day1[0] == t + 12 * HOUR and not np.array_equal(day0[1], day1[1])
    items = block.columns["items"]
    sku = items.children["sku"].codes
    after = np.repeat(block.event_time, np.diff(items.offsets)) > t + 12 * HOUR
    assert after.any() and (~after).any()
    unit = np.asarray(items.children["unit_price"])
    assert np.array_equal(unit[after], day1[1][sku[after]])
    assert np.array_equal(unit[~after], day0[1][sku[~after]])
    promo = np.asarray(items.children["promotion_id"])
    assert np.array_equal(promo[after], day1[3][sku[after]])
    assert np.array_equal(items.nulls["promotion_id"], promo == 0)
    qty = np.asarray(items.children["quantity"])
    gross = qty[after] * day1[1][sku[after]]
    discount = np.asarray(items.children["discount"])[after]
    assert np.array_equal(discount, (gross * day1[2][sku[after]] + 5000) // 10000)
    sums = np.add.reduceat(items.children["line_total"], items.offsets[:-1])
    assert np.array_equal(block.columns["subtotal"], sums)


def test_promotions_keep_their_share_and_lift_demand() -> None:
    """Over 60 simulated days about promo_share of SKUs is on promotion; a promoted SKU sells
    about 1 + promo_lift * discount times as often as when it is not."""
    p = RetailParams(stores=10, skus=400, customers=2000, promo_share=0.2, promo_days=5,
                     promo_discount=0.2, promo_lift=3.0, initial_stock_days=365,
                     regional_variation=0)  # fmt: skip
    pack = RetailPack(p, SeedTree(9))
    gen = pack.stream("pos_transaction")
    on, off = np.zeros(400), np.zeros(400)
    lifts, shares = [], []
    for d in range(60):
        b = gen.generate(d * 4000, uniform_times(4000, NOON + d * DAY, NOON + d * DAY))
        bp = pack.prices.promo_bp
        shares.append((bp > 0).mean())
        lifts.append(1 + 3.0 * bp / 10000)
        sku = b.columns["items"].children["sku"].codes
        c = np.bincount(sku, minlength=400)
        promoted = bp > 0
        on[promoted] += c[promoted]
        off[~promoted] += c[~promoted]
    assert 0.15 < np.mean(shares) < 0.25
    # Mantel-Haenszel rate ratio over SKUs: sales per promoted day / per plain day
    days_on = np.sum([lf > 1 for lf in lifts], axis=0)
    days_off = 60 - days_on
    ratio = (on * days_off).sum() / (off * days_on).sum()
    expected = np.mean([lf[lf > 1].mean() for lf in lifts])
    assert abs(ratio / expected - 1) < 0.15, (ratio, expected)


def test_price_change_stream_replays_to_the_price_book() -> None:
    """Listed SKUs first; applying every change in order gives the current list prices and
    promotions; costs stay below list prices."""
    p = RetailParams(skus=200, customers=1000, promo_share=0.2, promo_days=3,
                     price_change_rate=20)  # fmt: skip
    pack = RetailPack(p, SeedTree(12))
    pos, pc = pack.stream("pos_transaction"), pack.stream("price_change")
    for d in range(20):
        pos.generate(d * 100, uniform_times(100, NOON + d * DAY, NOON + d * DAY))
    block = pc.poll(NOON + 20 * DAY, 0, 10**9)
    assert block is not None
    kinds = block.columns["change_type"].to_list()
    sku = block.columns["sku"].codes
    assert kinds[:200] == ["listed"] * 200 and sorted(sku[:200].tolist()) == list(range(200))
    assert {"list_price", "promotion_start", "promotion_end"} <= set(kinds)
    assert (np.diff(block.event_time) >= 0).all()
    price = np.zeros(200, dtype=np.int64)
    promo = np.zeros(200, dtype=np.int64)
    nulls = block.nulls
    for i, k in enumerate(kinds):
        s = sku[i]
        if k == "list_price":
            assert block.columns["previous_price"][i] == price[s]
        price[s] = block.columns["list_price"][i]
        promo[s] = 0 if nulls["promotion_id"][i] else block.columns["promotion_id"][i]
    assert np.array_equal(price, pack.prices.list_price)
    assert np.array_equal(promo, pack.prices.promo_id)
    assert (block.columns["unit_cost"] < block.columns["list_price"]).all()


def test_seasonality_strength_shapes_the_default_rate() -> None:
    from datafactory.config import ConfigError, parse_config

    def rates(strength: float) -> tuple[float, float]:
        cfg = parse_config(
            f"packs: {{retail: {{params: {{seasonality_strength: {strength}}}}}}}\n"
            "sinks: {o: {type: stdout}}\n"
        )
        rate = cfg.streams[0].rate
        night, noon = (NOON - 9 * HOUR) / 1e6, NOON / 1e6
        return rate.rate(night, 0), rate.rate(noon, 0)

    night, noon = rates(1.0)
    assert noon > 20 * night
    night, noon = rates(0.0)
    assert night == pytest.approx(noon)
    with pytest.raises(ConfigError) as e:
        rates(1.5)
    assert "seasonality_strength" in str(e.value)


def test_invalid_params_name_the_parameter() -> None:
    with pytest.raises(ValidationError) as e:
        RetailParams.model_validate({"stores": 0})
    assert "stores" in str(e.value)
    with pytest.raises(ValidationError) as e:
        RetailParams.model_validate({"online_share": 0.9, "click_collect_share": 0.2})
    assert "online_share + click_collect_share" in str(e.value)


async def test_hourly_volume_follows_the_default_seasonality(tmp_path: Path) -> None:
    """A simulated week on the pack's default profile (scaled to 0.5 events/s): sales per hour
    of the week correlate with the curve (> 0.9), and Saturday outsells Monday."""
    import datetime as dt

    import orjson

    from datafactory.config import parse_config
    from datafactory.runtime.engine import Engine
    from datafactory_retail import DEFAULT_RATE

    rate = {**DEFAULT_RATE.model_dump(), "base": 0.5}
    cfg = parse_config(
        orjson.dumps(
            {
                "run": {"name": "week", "seed": 5, "clock": "simulated",
                        "start": "2026-03-02T00:00:00Z", "duration": 7 * 86400},
                "packs": {"retail": {"streams": {"pos_transaction": {"rate": rate}}}},
                "sinks": {"out": {"type": "file", "path": str(tmp_path)}},
                "telemetry": {"enabled": False},
            }
        ).decode()
    )  # fmt: skip
    await Engine(cfg).run()
    counts = np.zeros(168)
    start = dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp()
    for f in tmp_path.rglob("*.jsonl"):
        for line in f.read_bytes().splitlines():
            t = dt.datetime.fromisoformat(orjson.loads(line)["event_time"].replace("Z", "+00:00"))
            hour = int((t.timestamp() - start) // 3600)
            if hour < 168:
                counts[hour] += 1
    expected = np.array([DEFAULT_RATE.rate(start + h * 3600 + 1800, 0) for h in range(168)])
    assert counts.sum() > 250_000
    assert np.corrcoef(counts, expected)[0, 1] > 0.9
    assert counts[120:144].sum() > 1.5 * counts[0:24].sum()  # Saturday vs Monday
