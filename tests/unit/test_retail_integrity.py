"""A long simulated run of all five retail streams, checked from the written files alone, as a
downstream team would: every reference points at something that exists earlier in the run,
money adds up to the cent at the prices in effect, stock replays never go negative, and
churned customers do not buy until they are reactivated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.runtime.engine import Engine
from tests.retail_checks import by_time, check_money, check_references, check_stock

CFG = """
run: {{name: integrity, seed: 33, clock: simulated, start: 2026-01-05T00:00:00Z}}
packs:
  retail:
    params: {{stores: 8, skus: 400, customers: 3000, expected_daily_transactions: 1600,
              churn_rate: 0.6, winback_rate: 0.5, acquisition_rate: 0.5,
              price_change_rate: 6, promo_days: 5, return_rate: 0.05}}
    streams:
      pos_transaction: {{rate: {rate}, max_events: {n}}}
      return: {{}}
      inventory_movement: {{}}
      customer_event: {{}}
      price_change: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
telemetry: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    import asyncio

    from datafactory_retail import DEFAULT_RATE

    out = tmp_path_factory.mktemp("integrity")
    # the default weekly/holiday profile, scaled to ~1,500 sales a day: about 100 days
    rate = orjson.dumps({**DEFAULT_RATE.model_dump(), "base": 0.02}).decode()
    asyncio.run(Engine(parse_config(CFG.format(out=out, rate=rate, n=150_000))).run())
    got: dict[str, list[dict[str, Any]]] = {}
    for name in ("pos_transaction", "return", "inventory_movement", "customer_event",
                 "price_change"):  # fmt: skip
        rows = [
            orjson.loads(x)
            for f in sorted((out / "retail" / name).glob("*.jsonl"))
            for x in f.read_bytes().splitlines()
        ]
        got[name] = by_time(rows)
    return got


def test_the_run_is_long_and_every_stream_has_events(streams) -> None:  # type: ignore[no-untyped-def]
    pos = streams["pos_transaction"]
    assert len(pos) == 150_000
    assert pos[-1]["t"] - pos[0]["t"] > 80 * 86_400_000_000
    kinds = {r["event_type"] for r in streams["customer_event"]}
    assert kinds == {"created", "updated", "churned", "reactivated"}
    assert {r["movement_type"] for r in streams["inventory_movement"]} == {
        "sale", "receipt", "adjustment"
    }  # fmt: skip
    assert {r["change_type"] for r in streams["price_change"]} == {
        "listed", "list_price", "promotion_start", "promotion_end"
    }  # fmt: skip
    assert len(streams["return"]) > 3000


def test_every_reference_exists_earlier_in_the_run(streams) -> None:  # type: ignore[no-untyped-def]
    assert check_references(streams) == (8, 400)


def test_money_adds_up_at_the_prices_in_effect(streams) -> None:  # type: ignore[no-untyped-def]
    """Replaying price_change gives every line's unit price and promotion; totals to the cent."""
    assert check_money(streams) > 10_000


def test_stock_replays_never_negative_and_matches_sales(streams) -> None:  # type: ignore[no-untyped-def]
    """The movements replay per store x SKU to a book stock that never goes negative; sale
    movements are exactly the POS lines (as many units, same cells)."""
    check_stock(streams)


def test_churned_customers_do_not_buy_until_reactivated(streams) -> None:  # type: ignore[no-untyped-def]
    timeline = [(e["t"], 0, e["customer_id"], e["event_type"]) for e in streams["customer_event"]]
    timeline += [
        (s["t"], 1, s["customer_id"], "sale")
        for s in streams["pos_transaction"]
        if s["customer_id"] is not None
    ]
    timeline.sort(key=lambda x: (x[0], x[1]))
    churned: set[str] = set()
    reactivated = bought_after = 0
    back: set[str] = set()
    for _, _, c, kind in timeline:
        if kind == "churned":
            churned.add(c)
        elif kind == "reactivated":
            churned.discard(c)
            back.add(c)
            reactivated += 1
        elif kind == "sale":
            assert c not in churned, c
            bought_after += c in back
    assert len(churned) > 100 and reactivated > 20 and bought_after > 0


async def test_all_five_streams_are_deterministic(tmp_path: Path) -> None:
    """The same config and seed give byte-identical files for every stream (a week)."""
    import hashlib

    from datafactory_retail import DEFAULT_RATE

    rate = orjson.dumps({**DEFAULT_RATE.model_dump(), "base": 0.02}).decode()
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        await Engine(parse_config(CFG.format(out=out, rate=rate, n=12_000))).run()
        digests.append(
            {
                str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*.jsonl"))
            }
        )
    assert digests[0] == digests[1]
    assert {p.split("/")[1] for p in digests[0]} == {
        "pos_transaction", "return", "inventory_movement", "customer_event", "price_change"
    }  # fmt: skip
