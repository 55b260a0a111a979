"""Retail inventory across pos_transaction and inventory_movement: sales never exceed the
shelf, the books drift by shrinkage and cycle counts correct exactly that, replenishment
refills, and the movements add up to the POS lines."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

from datafactory.config import parse_config
from datafactory.runtime.engine import Engine

CFG = """
run: {{name: inv, seed: 12, clock: simulated, start: 2026-02-02T00:00:00Z}}
packs:
  retail:
    params: {{stores: 3, skus: 60, customers: 500, expected_daily_transactions: 4320,
              initial_stock_days: 3.5, shrinkage_rate: 0.5, cycle_count_days: 4,
              lead_time_days: 2}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 0.05}}, max_events: 86400}}
      inventory_movement: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
telemetry: {{enabled: false}}
"""


async def test_inventory_invariants_over_twenty_simulated_days(tmp_path: Path) -> None:
    out = tmp_path / "out"
    engine = Engine(parse_config(CFG.format(out=out)))
    await engine.run()
    inv = engine.packs["retail"].inventory  # type: ignore[attr-defined]

    def rows(stream: str) -> list[dict[str, object]]:
        return [
            orjson.loads(x)
            for f in sorted((out / "retail" / stream).glob("*.jsonl"))
            for x in f.read_bytes().splitlines()
        ]

    sales = rows("pos_transaction")
    moves = rows("inventory_movement")
    assert len(sales) == 86_400
    # every POS line is a sale movement of the same quantity (released to the end)
    sold_pos: dict[tuple[str, str], int] = defaultdict(int)
    for s in sales:
        for item in s["items"]:  # type: ignore[attr-defined]
            assert item["quantity"] >= 1
            sold_pos[(str(s["store_id"]), item["sku"])] += item["quantity"]
    sold_mov: dict[tuple[str, str], int] = defaultdict(int)
    book: dict[tuple[str, str], int] = defaultdict(int)
    kinds: dict[str, int] = defaultdict(int)
    times = []
    for m in moves:
        key = (str(m["store_id"]), str(m["sku"]))
        kinds[f"{m['movement_type']}/{m['reason']}"] += 1
        book[key] += int(m["quantity"])  # type: ignore[call-overload]
        if m["movement_type"] == "sale":
            sold_mov[key] -= int(m["quantity"])  # type: ignore[call-overload]
        times.append(m["event_time"])
    assert sold_mov == sold_pos
    assert times == sorted(times)  # released in time order
    assert kinds["receipt/opening_stock"] == 3 * 60
    assert kinds["receipt/replenishment"] > 100 and kinds["adjustment/cycle_count"] > 50
    # the shelf never went below zero; stockouts were lost sales
    assert inv.actual.min() >= 0 and inv.lost_units > 0
    # adjustments are exactly the shrinkage counts found: what is not yet counted is the gap
    assert inv.adjusted_total == -(inv.shrunk_total - int(inv.shrink_since_count.sum()))
    assert np.array_equal(inv.book - inv.actual, inv.shrink_since_count)
    # the movements replay to the books, up to what was decided but not yet released
    assert all(v >= 0 for v in book.values())


def test_opening_stock_must_outlast_the_first_delivery() -> None:
    import pytest

    from datafactory.config import ConfigError

    bad = CFG.format(out="x").replace("initial_stock_days: 3.5", "initial_stock_days: 2")
    with pytest.raises(ConfigError, match="initial_stock_days must be at least lead_time_days"):
        parse_config(bad)
