"""Retail POS: invariants of every transaction and the shape of the catalogue's popularity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from datafactory.engine.blocks import DictColumn, ListColumn
from datafactory.engine.seeding import SeedTree
from datafactory.packs.retail import RetailPack, RetailParams


@pytest.fixture(scope="module")
def block():  # type: ignore[no-untyped-def]
    pack = RetailPack(RetailParams(stores=20, skus=2000, customers=5000), SeedTree(11))
    return pack.stream("pos_transaction").generate(50_000, 0, 0, 3_600_000_000)


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


def test_sku_popularity_is_zipf_like(block) -> None:  # type: ignore[no-untyped-def]
    sku = block.columns["items"].children["sku"].codes
    counts = np.sort(np.bincount(sku, minlength=2000))[::-1].astype(float)
    ranks = np.arange(1, 101)
    slope = np.polyfit(np.log(ranks), np.log(counts[:100]), 1)[0]
    assert -1.3 < slope < -0.8  # configured exponent 1.07


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
    from datafactory.engine.pipeline import Engine
    from datafactory.packs.retail import DEFAULT_RATE

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
