"""The questions a platform answers about a pack's events, as a pack declares them.

A question is an aggregate over event-time tumbling windows of one stream, grouped by fields
of the events (or of an array's items: ``items.category`` makes the rows items), for example
retail's transactions, units and revenue per store per hour::

    Question("sales_by_store_hour", "pos_transaction", window=3600, by=("store_id",),
             measures=(Measure("transactions", "count"), Measure("units", "sum", "items.quantity"),
                       Measure("revenue", "sum", "total")))

Fields are paths in the stream's Avro schema: a field, a nested record's field
(``ship.city``), or an array of records' item field (``items.line_total``). At event level, an
item field is summed over each event's items first (``units``); at item level, the event's
fields are every item's. ``where`` keeps the rows whose field has one of the given values
(``alert_type: [alert_raised]``). A ``running`` question's measures are running totals: each
window's row holds the total of every window up to its end, and each group has a row at every
window from its first to the span's last (stock on hand per store and SKU at each day's end:
every inventory movement summed up to it). ``count`` counts rows; ``sum``, ``min``, ``max``,
``mean`` skip nulls, as SQL does (``count`` of a field counts its non-null values); sums of
decimals stay exact. A measure ``since`` another timestamp field aggregates the span between
the two, in seconds (an outage: from the last heartbeat before it to the device's return).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["count", "sum", "min", "max", "mean"]
OPS: tuple[str, ...] = ("count", "sum", "min", "max", "mean")


@dataclass(frozen=True)
class Measure:
    name: str  # the answer's column
    op: Op
    field: str | None = None  # a path; for count: rows where it is not null (None: all)
    # a span: ``field`` minus this timestamp field, in seconds (both the event's timestamps)
    since: str | None = None


@dataclass(frozen=True)
class Question:
    name: str
    stream: str  # the pack's stream
    window: int  # seconds: event-time tumbling windows of this size, from the epoch
    by: tuple[str, ...]
    measures: tuple[Measure, ...]
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    doc: str = ""
    # the field saying when an event reaches a platform, where that is not its event time
    # (IoT readings a device buffered: sent_at); chaos's delays come on top
    arrival: str | None = None
    running: bool = False  # running totals (count and sum only), a row per window


@dataclass(frozen=True)
class Path:
    """A field's place in a stream's schema: ``top`` (a top-level field), then ``inner``
    (fields of nested records, or the item field of the array ``top``)."""

    text: str
    top: str
    inner: tuple[str, ...]
    item: bool  # an array's item field
    type: Any  # its Avro type (nullable unions as they are)


def resolve(schema_fields: list[dict[str, Any]], text: str) -> Path:
    """The path ``text`` in a schema (KeyError saying where it stops)."""
    parts = text.split(".")
    fields = {f["name"]: f for f in schema_fields}
    if parts[0] not in fields:
        raise KeyError(f"{text!r}: no field {parts[0]!r} (fields: {', '.join(fields)})")
    t = fields[parts[0]]["type"]
    item = False
    for i, part in enumerate(parts[1:], start=1):
        base = bare(t)
        if isinstance(base, dict) and base.get("type") == "array" and not item and i == 1:
            base, item = bare(base["items"]), True
        if not (isinstance(base, dict) and base.get("type") == "record"):
            raise KeyError(f"{text!r}: {'.'.join(parts[:i])} has no fields")
        inner = {f["name"]: f for f in base["fields"]}
        if part not in inner:
            raise KeyError(f"{text!r}: no field {part!r} in {'.'.join(parts[:i])}")
        t = inner[part]["type"]
    base = bare(t)
    if isinstance(base, dict) and base.get("type") in ("array", "record"):
        raise KeyError(f"{text!r} is not a value (an array or a record)")
    return Path(text, parts[0], tuple(parts[1:]), item, t)


def bare(t: Any) -> Any:
    """A type without its null (a nullable union's one other type)."""
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        return rest[0] if len(rest) == 1 else t
    return t


@dataclass(frozen=True)
class Plan:
    """A question checked against its stream's schema: its paths, and the array whose items
    are the rows (None: the events are)."""

    question: Question
    by: tuple[Path, ...]
    measures: tuple[tuple[Measure, Path | None], ...]
    spans: dict[str, Path]  # a span's measure: the path of the field it is since
    where: tuple[tuple[Path, tuple[Any, ...]], ...]
    items: str | None
    tops: dict[str, Any]  # the top-level fields it reads: their Avro types


def plan(q: Question, schema_fields: list[dict[str, Any]]) -> Plan:
    """The question's plan (ValueError on anything it cannot ask of the schema)."""

    def at(text: str) -> Path:
        try:
            return resolve(schema_fields, text)
        except KeyError as e:
            raise ValueError(f"question {q.name!r}: {e.args[0]}") from None

    if q.window <= 0:
        raise ValueError(f"question {q.name!r}: window is a positive number of seconds")
    by = tuple(at(t) for t in q.by)
    measures = tuple((m, at(m.field) if m.field else None) for m in q.measures)
    where = tuple((at(t), values) for t, values in q.where)
    arrays = {p.top for p in (*by, *(p for _, p in measures if p)) if p.item}
    if len(arrays) > 1:
        raise ValueError(f"question {q.name!r}: items of one array at a time ({sorted(arrays)})")
    items = next((p.top for p in by if p.item), None)
    for m, p in measures:
        if m.op not in OPS:
            raise ValueError(f"question {q.name!r}: {m.name}: op is one of {OPS}")
        if m.op != "count" and p is None:
            raise ValueError(f"question {q.name!r}: {m.name}: {m.op} of which field?")
        if q.running and m.op not in ("count", "sum"):
            raise ValueError(f"question {q.name!r}: {m.name}: a running total is a count or sum")
        if p is not None and p.item and items is None and m.op != "sum":
            raise ValueError(
                f"question {q.name!r}: {m.name}: an item field per event is summed (op: sum)"
            )
    if any(p.item for p, _ in where):
        raise ValueError(f"question {q.name!r}: where is on the events' own fields")

    def stamp(text: str, what: str) -> Path:
        a = at(text)
        base = bare(a.type)
        micros = isinstance(base, dict) and base.get("logicalType") == "timestamp-micros"
        if a.item or a.inner or not micros:
            raise ValueError(f"question {q.name!r}: {what} is a timestamp field of the event")
        return a

    if q.arrival is not None:
        stamp(q.arrival, "arrival")
    spans = {}
    for m, _ in measures:
        if m.since is not None:
            if m.op == "count" or m.field is None:
                raise ValueError(
                    f"question {q.name!r}: {m.name}: a span is summed, averaged or its min or "
                    "max taken, of a field (since: another timestamp field), not counted"
                )
            stamp(m.field, f"{m.name}'s field")
            spans[m.name] = stamp(m.since, f"{m.name}'s since")
    named = (*by, *(p for _, p in measures if p), *(p for p, _ in where), *spans.values())
    types = {f["name"]: f["type"] for f in schema_fields}
    return Plan(q, by, measures, spans, where, items, {p.top: types[p.top] for p in named})
