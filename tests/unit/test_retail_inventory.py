"""Retail inventory across pos_transaction and inventory_movement: sales never exceed the
shelf, the books drift by shrinkage and cycle counts correct exactly that, replenishment
refills, and the movements add up to the POS lines."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from datafactory.config import parse_config
from datafactory.runtime.engine import Engine
from datafactory_retail import kernels

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


def _inventory(cells: int, rng: np.random.Generator) -> Any:
    from types import SimpleNamespace

    from datafactory_retail.inventory import Inventory

    p = SimpleNamespace(expected_daily_transactions=50, initial_stock_days=2.0,
                        shrinkage_rate=0.02)  # fmt: skip
    share = rng.random((1, cells))
    inv = Inventory(p, rng, share / share.sum(), 2.0)
    inv.actual -= rng.integers(0, 4, cells)  # some shelves empty, some below zero
    return inv


def test_compiled_sales_from_stock_are_the_numpy_ones() -> None:
    """``Inventory.take`` runs in C where the retail extension is built: line by line the
    same units sold, the same ledgers after, the same lost units as the numpy code, for
    lines that come back to the same cell many times and shelves that run out."""
    if kernels.native() is None:  # pragma: no cover - only where it is not built
        pytest.fail("the retail extension is part of the install; build it (pip install -e .)")
    rng = np.random.default_rng(4)
    ran_out = False
    for cells, lines in ((1, 1), (1, 50), (7, 300), (400, 2000), (5000, 64)):
        a = _inventory(cells, np.random.default_rng(cells))
        b = _inventory(cells, np.random.default_rng(cells))
        for _ in range(3):
            cell = rng.integers(0, cells, lines).astype(np.int64)
            qty = rng.integers(1, 13, lines).astype(np.int64)
            sold = a.take(cell, qty)
            ref = b._take(cell, qty)
            assert np.array_equal(sold, ref), (cells, lines)
            for ledger in ("actual", "book", "sold_today", "demand_today", "lost_units"):
                assert np.array_equal(getattr(a, ledger), getattr(b, ledger)), ledger
        ran_out |= a.lost_units > 0
    assert ran_out  # shelves did run out


def test_sales_from_stock_refuse_cells_out_of_range_and_take_nothing() -> None:
    assert kernels.native() is not None
    inv = _inventory(5, np.random.default_rng(1))
    before = inv.actual.copy()
    with pytest.raises(ValueError, match="out of range"):
        inv.take(np.array([0, 5], np.int64), np.array([1, 1], np.int64))
    assert np.array_equal(inv.actual, before)
    assert len(inv.take(np.zeros(0, np.int64), np.zeros(0, np.int64))) == 0
