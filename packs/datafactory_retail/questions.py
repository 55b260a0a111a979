"""What a platform answers about a shop's events (``datafactory expect`` computes the right
answers): sales per store per hour and per category per day, refunds per store per day, and
the customers' comings and goings per day."""

from __future__ import annotations

from datafactory.expect.questions import Measure, Question

HOUR, DAY = 3600, 86400

QUESTIONS = (
    Question(
        "sales_by_store_hour",
        "pos_transaction",
        HOUR,
        by=("store_id",),
        measures=(
            Measure("transactions", "count"),
            Measure("units", "sum", "items.quantity"),
            Measure("subtotal", "sum", "subtotal"),
            Measure("tax", "sum", "tax"),
            Measure("revenue", "sum", "total"),
        ),
        doc="Transactions, units and revenue (exact) per store per hour.",
    ),
    Question(
        "sales_by_category_day",
        "pos_transaction",
        DAY,
        by=("items.category",),
        measures=(
            Measure("lines", "count"),
            Measure("units", "sum", "items.quantity"),
            Measure("revenue", "sum", "items.line_total"),
        ),
        doc="Lines, units and line revenue (after discounts, before tax) per category per day.",
    ),
    Question(
        "returns_by_store_day",
        "return",
        DAY,
        by=("store_id",),
        measures=(
            Measure("returns", "count"),
            Measure("units", "sum", "quantity"),
            Measure("refunded", "sum", "refund"),
        ),
        doc="Returns, units and refunds (exact) per store (where bought) per day.",
    ),
    Question(
        "customers_by_day",
        "customer_event",
        DAY,
        by=("event_type",),
        measures=(Measure("customers", "count"),),
        doc="Customers created, updated, churned and reactivated per day.",
    ),
    Question(
        "stock_by_store_sku_day",
        "inventory_movement",
        DAY,
        by=("store_id", "sku"),
        measures=(Measure("on_hand", "sum", "quantity"), Measure("movements", "count")),
        running=True,
        doc="Book stock on hand per store and SKU at each day's end: every movement (opening "
        "stock, receipts, sales, shrinkage adjustments) up to it, summed; and how many.",
    ),
)
