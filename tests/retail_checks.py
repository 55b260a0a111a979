"""The retail pack's integrity checks over written events, as a downstream team would run
them: shared by the long simulated run's tests and the restart (kill -9) tests."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

Streams = dict[str, list[dict[str, Any]]]


def us(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1_000_000)


def cents(v: Any) -> int:
    return int(Decimal(str(v)) * 100)


def by_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``t`` (epoch µs), in event-time order (stable: seq order within a time)."""
    for r in rows:
        r["t"] = us(r["event_time"])
    rows.sort(key=lambda r: r["t"])
    return rows


def check_references(streams: Streams) -> tuple[int, int]:
    """Every reference points at something that exists earlier; (stores, SKUs listed)."""
    created: dict[str, int] = {}
    for e in streams["customer_event"]:
        if e["event_type"] == "created":
            assert e["customer_id"] not in created
            created[e["customer_id"]] = e["t"]
        else:
            assert created[e["customer_id"]] <= e["t"]
    stores: dict[str, int] = {}
    listed: dict[str, int] = {}
    for m in streams["inventory_movement"]:
        if m["reason"] == "opening_stock":
            stores.setdefault(m["store_id"], m["t"])
    for c in streams["price_change"]:
        if c["change_type"] == "listed":
            listed[c["sku"]] = c["t"]
        else:
            assert listed[c["sku"]] <= c["t"]
    for e in streams["customer_event"]:
        assert stores[e["home_store_id"]] <= e["t"]
    for m in streams["inventory_movement"]:
        assert stores[m["store_id"]] <= m["t"] and listed[m["sku"]] <= m["t"]
    sales: dict[int, dict[str, Any]] = {}
    for s in streams["pos_transaction"]:
        assert stores[s["store_id"]] <= s["t"]
        if s["customer_id"] is not None:
            assert created[s["customer_id"]] <= s["t"]
        for line in s["items"]:
            assert listed[line["sku"]] <= s["t"]
        sales[s["transaction_id"]] = s
    for r in streams["return"]:
        sale = sales[r["transaction_id"]]
        assert sale["t"] < r["t"]
        line = sale["items"][r["line"] - 1]
        assert line["sku"] == r["sku"] and r["store_id"] == sale["store_id"]
        assert r["customer_id"] == sale["customer_id"]
    return len(stores), len(listed)


def check_money(streams: Streams) -> int:
    """Replaying price_change gives every line's unit price and promotion; totals to the cent."""
    changes = streams["price_change"]
    price: dict[str, int] = {}
    promo: dict[str, tuple[int | None, int]] = {}
    i = 0
    promoted_lines = 0
    for s in streams["pos_transaction"]:
        while i < len(changes) and changes[i]["t"] <= s["t"]:
            c = changes[i]
            price[c["sku"]] = cents(c["list_price"])
            rate = c["discount_rate"]
            promo[c["sku"]] = (c["promotion_id"], int(Decimal(str(rate or 0)) * 10_000))
            i += 1
        subtotal = 0
        for line in s["items"]:
            unit = cents(line["unit_price"])
            assert unit == price[line["sku"]]
            pid, bp = promo[line["sku"]]
            assert line["promotion_id"] == pid
            gross = unit * line["quantity"]
            assert cents(line["discount"]) == (gross * bp + 5_000) // 10_000
            assert cents(line["line_total"]) == gross - cents(line["discount"])
            promoted_lines += pid is not None
            subtotal += cents(line["line_total"])
        assert cents(s["subtotal"]) == subtotal
        assert cents(s["total"]) == subtotal + cents(s["tax"])
    return promoted_lines


def check_stock(streams: Streams) -> None:
    """The movements replay per store x SKU to a book stock that never goes negative; sale
    movements are exactly the POS lines (as many units, same cells)."""
    book: dict[tuple[str, str], int] = defaultdict(int)
    sold: dict[tuple[str, str], int] = defaultdict(int)
    for m in streams["inventory_movement"]:
        cell = (m["store_id"], m["sku"])
        book[cell] += m["quantity"]
        assert book[cell] >= 0
        if m["movement_type"] == "sale":
            sold[cell] -= m["quantity"]
    lines: dict[tuple[str, str], int] = defaultdict(int)
    for s in streams["pos_transaction"]:
        for line in s["items"]:
            lines[(s["store_id"], line["sku"])] += line["quantity"]
    assert sold == lines
