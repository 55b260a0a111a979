"""Retail's ``store`` stream: every store listed once when the run starts, with attributes a
platform can join sales to and find true (each basket's tax is its store's rate; in-store
sales fall within its opening hours)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from datafactory.config import load_config
from datafactory.runtime.engine import Engine

SCENARIO = """
run: {name: st, seed: 21, clock: simulated, start: "START", duration: 1d}
packs:
  retail:
    params: {stores: 7, skus: 200, customers: 1000}
    streams:
      pos_transaction: {rate: {profile: constant, base: 0.5}}
      store: {}
sinks: {out: {type: file, path: OUT, format: json}}
telemetry: {enabled: false}
"""


def test_stores_are_listed_once_at_the_start_and_their_attributes_hold(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        SCENARIO.replace("OUT", str(tmp_path / "data")).replace("START", "2026-03-02T00:00:00Z")
    )
    asyncio.run(Engine(load_config(path)).run())

    def read(stream: str) -> list[dict]:
        return [json.loads(x, parse_float=Decimal)
                for f in sorted((tmp_path / "data" / "retail" / stream).glob("*.jsonl"))
                for x in f.read_text().splitlines()]  # fmt: skip

    stores = {s["store_id"]: s for s in read("store")}
    assert len(read("store")) == len(stores) == 7
    assert {s["event_time"] for s in stores.values()} == {"2026-03-02T00:00:00.000000Z"}
    assert {s["change_type"] for s in stores.values()} == {"listed"}
    sales = read("pos_transaction")
    assert len(sales) == 43200 and {s["store_id"] for s in sales} <= set(stores)
    for sale in sales:
        store = stores[sale["store_id"]]
        tax = (sale["subtotal"] * store["tax_rate"]).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert sale["tax"] == tax, (sale, store)
        if sale["channel"] == "store":
            hour = dt.datetime.fromisoformat(sale["event_time"].replace("Z", "+00:00")).hour
            assert store["opens_at"] <= hour < store["closes_at"], (sale, store)


def test_a_regions_tax_revised_at_a_quarter_start_is_announced_and_applied(tmp_path: Path) -> None:
    """A day across 1 July: the stores whose region's rate changes get a tax_changed event at
    midnight with the new rate, and every basket is taxed at its store's rate at its time."""
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("OUT", str(tmp_path / "data"))
                    .replace("START", "2026-06-30T12:00:00Z"))  # fmt: skip
    asyncio.run(Engine(load_config(path)).run())
    events = sorted(_read(tmp_path, "store"), key=lambda s: s["event_time"])
    changed = [s for s in events if s["change_type"] == "tax_changed"]
    assert changed and {s["event_time"] for s in changed} == {"2026-07-01T00:00:00.000000Z"}
    listed = {s["store_id"]: s for s in events if s["change_type"] == "listed"}
    for s in changed:  # the rest of the store as listed; only its rate differs
        before = listed[s["store_id"]]
        assert s["tax_rate"] != before["tax_rate"]
        assert {k: v for k, v in s.items() if k not in ("event_id", "event_time", "change_type",
                "tax_rate")} == {k: v for k, v in before.items() if k not in ("event_id",
                "event_time", "change_type", "tax_rate")}  # fmt: skip
    after = {k: v for k, v in listed.items()}
    after.update({s["store_id"]: s for s in changed})
    taxed = {"before": 0, "after": 0}
    for sale in _read(tmp_path, "pos_transaction"):
        late = sale["event_time"] >= "2026-07-01"
        store = (after if late else listed)[sale["store_id"]]
        tax = (sale["subtotal"] * store["tax_rate"]).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert sale["tax"] == tax, (sale, store)
        taxed["after" if late else "before"] += sale["store_id"] in {s["store_id"] for s in changed}
    assert taxed["before"] > 100 and taxed["after"] > 100


def _read(tmp_path: Path, stream: str) -> list[dict]:
    return [json.loads(x, parse_float=Decimal)
            for f in sorted((tmp_path / "data" / "retail" / stream).glob("*.jsonl"))
            for x in f.read_text().splitlines()]  # fmt: skip
