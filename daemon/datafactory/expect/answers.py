"""A question's answer, built a block at a time in Arrow's compute kernels.

Each block's rows (its events, or its array's items) are grouped by (window, keys) and
aggregated into a partial table; partials are folded together as they pile up (sums of
sums, counts of counts, the least of minima...), so memory is the answer's size, not the
events'. Values are typed from the schema as batch mode types them (decimals stay exact
``decimal128``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from datafactory.encoders.arrow import arrow_type, column_converter
from datafactory.engine.blocks import ListColumn, RecordBlock
from datafactory.expect import running
from datafactory.expect.questions import Path, Plan, bare

FOLD_AT = 64  # partial tables kept before they are folded into one
GROUP_AT = 65_536  # rows of blocks gathered before they are grouped into a partial table
_PARTS = {"count": ("sum",), "sum": ("sum",), "min": ("min",), "max": ("max",),
          "mean": ("sum", "count")}  # fmt: skip
_FOLD = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}


class Answer:
    """The answer to one question (``plan``), from the blocks of its stream."""

    def __init__(self, plan: Plan, per_event: bool = False, end_us: int | None = None) -> None:
        """``per_event``: grouped by each event too (its ``seq``: what each contributes);
        ``end_us``: the span's end (a running question's rows go on to its last window)."""
        self.plan = plan
        self.per_event = per_event
        self.end_us = end_us
        self.window_us = plan.question.window * 1_000_000
        self.keys = [f"k{i}" for i in range(len(plan.by))] + (["seq"] if per_event else [])
        # the partial tables' value columns: (measure index, part) -> column name
        self.parts = [(i, part) for i, (m, _) in enumerate(plan.measures) for part in _PARTS[m.op]]
        self.partials: list[pa.Table] = []
        self.pending: list[pa.Table] = []  # blocks' rows not grouped yet
        self.running = plan.question.running and not per_event
        self.ran: list[pa.Table] = []  # a running answer's shards' running totals (in order)
        self.pending_rows = 0
        self.rows = 0  # rows aggregated (events or items)

    def add(self, block: RecordBlock) -> None:
        rows = _Rows(block, self.plan)
        keep = rows.keep(self.plan.where)
        table: dict[str, Any] = {"window": rows.window(self.window_us)}
        for name, path in zip(self.keys, self.plan.by, strict=False):
            table[name] = rows.value(path)  # (a pool's codes: plain once grouped)
        if self.per_event:
            table["seq"] = rows.seq()
        for i, (m, field) in enumerate(self.plan.measures):
            if field is None:
                table[f"m{i}"] = pa.array(np.ones(rows.n, dtype=np.int64))
            elif m.op == "count":  # its non-null values
                table[f"m{i}"] = pc.cast(pc.is_valid(rows.value(field)), pa.int64())
            elif m.name in self.plan.spans:  # µs between the two (seconds in the answer)
                since = rows.value(self.plan.spans[m.name])
                table[f"m{i}"] = pc.subtract(_micros(rows.value(field)), _micros(since))
            else:
                table[f"m{i}"] = rows.value(field)
        t = pa.table(table)
        if keep is not None:
            t = t.filter(keep)
        if not t.num_rows:
            return
        self.rows += t.num_rows
        self.pending.append(t)
        self.pending_rows += t.num_rows
        if self.pending_rows >= GROUP_AT:
            self._group()

    def _group(self) -> None:
        """The pending blocks' rows grouped and aggregated into a partial (one group-by for
        many small blocks: its fixed cost is most of a small block's)."""
        if not self.pending:
            return
        t = pa.concat_tables(self.pending).unify_dictionaries()  # (a pool's per block)
        self.pending, self.pending_rows = [], 0
        aggs = [(f"m{i}", part) for i, part in self.parts]
        partial = t.group_by(["window", *self.keys], use_threads=False).aggregate(aggs)
        for name in self.keys:  # dictionaries differ between groupings: the groups' values
            at = partial.schema.get_field_index(name)
            partial = partial.set_column(at, name, _plain(partial[name].combine_chunks()))
        self._fold(partial)

    def _fold(self, partial: pa.Table | None) -> None:
        """Keep a block's partial (its columns named window, k0.., p0..); fold the partials
        into one when they pile up, or at the end (``partial`` None)."""
        if partial is not None:
            named = {f"m{i}_{part}": f"p{j}" for j, (i, part) in enumerate(self.parts)}
            self.partials.append(_renamed(partial, named))
            if len(self.partials) < FOLD_AT:
                return
        if len(self.partials) > 1:
            merged = pa.concat_tables(self.partials)
            aggs = [(f"p{j}", _FOLD[part]) for j, (_, part) in enumerate(self.parts)]
            folded = merged.group_by(["window", *self.keys], use_threads=False).aggregate(aggs)
            named = {f"p{j}_{_FOLD[part]}": f"p{j}" for j, (_, part) in enumerate(self.parts)}
            self.partials = [_renamed(folded, named)]

    def fold(self) -> None:
        """The pending rows grouped and the partials folded into one; a running answer's
        laid out as running totals (a shard's, in its worker: its groups are its own, so
        most of the work of a running answer is done in parallel)."""
        self._group()
        if self.running:
            self._lay_out()
        else:
            self._fold(None)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (sent back from a worker) with its tables in Arrow's IPC format, which
        writes a slice's own rows: a group-by's output columns are slices of bigger
        buffers, and pickling a slice takes its whole buffer (one shard's 92 MB of stock
        partials pickled to 5.4 GB)."""
        state = dict(self.__dict__)
        for name in ("partials", "pending", "ran"):
            state[name] = [_ipc(t) for t in state[name]]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in ("partials", "pending", "ran"):
            state[name] = [pa.ipc.open_stream(b).read_all() for b in state[name]]
        self.__dict__.update(state)

    def _lay_out(self) -> None:
        """The partials laid out as running totals (the answer's own, or a shard's)."""
        if self.partials:
            t = pa.concat_tables(self.partials)
            self.ran.append(running.laid_out(t, self.keys, self.window_us, self.end_us))
            self.partials = []

    def merge(self, other: Answer) -> None:
        """Another answer to the same question (another shard's events) added to this."""
        other.fold()
        self.rows += other.rows
        self.partials += other.partials
        self.ran += other.ran
        if len(self.partials) >= FOLD_AT:
            self._fold(None)

    def table(self) -> pa.Table:
        """The answer: window_start, window_end, the keys, the measures; in window then key
        order."""
        self._group()
        if self.running:  # (a running total adds up the partials' rows itself)
            self._lay_out()
            self.ran = [t for t in self.ran if t.num_rows]
            if len(self.ran) > 1:
                self.ran = [running.joined(self.ran, self.keys)]
        else:
            self._fold(None)
        names = [_key_name(p, self.plan.by) for p in self.plan.by] + (
            ["seq"] if self.per_event else []
        )
        tables = self.ran if self.running else self.partials
        if not tables:
            return _empty(self.plan, names)
        t = tables[0]
        start = pc.cast(t["window"], pa.timestamp("us", tz="UTC"))
        end = pc.cast(pc.add(t["window"], self.window_us), pa.timestamp("us", tz="UTC"))
        cols: dict[str, Any] = {"window_start": start, "window_end": end}
        for name, key in zip(names, self.keys, strict=True):
            cols[name] = t[key]
        where = {(i, part): f"p{j}" for j, (i, part) in enumerate(self.parts)}
        for i, (m, _) in enumerate(self.plan.measures):
            if m.op == "mean":
                total = pc.cast(t[where[(i, "sum")]], pa.float64())
                cols[m.name] = pc.divide(total, pc.cast(t[where[(i, "count")]], pa.float64()))
            else:
                cols[m.name] = t[where[(i, _PARTS[m.op][0])]]
            if m.name in self.plan.spans:
                cols[m.name] = pc.divide(pc.cast(cols[m.name], pa.float64()), 1e6)
        out = pa.table(cols)
        if self.running:
            return out  # (in window then key order already)
        return out.sort_by([("window_start", "ascending"), *((n, "ascending") for n in names)])


def _ipc(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as writer:
        writer.write_table(t)
    return bytes(sink.getvalue())


def _micros(arr: pa.Array) -> pa.Array:
    """Timestamps as µs since the epoch (nulls kept)."""
    return pc.cast(pc.cast(arr, pa.timestamp("us", tz="UTC")), pa.int64())


def _renamed(t: pa.Table, names: dict[str, str]) -> pa.Table:
    """``t`` with its columns in a fixed order (window, keys, parts) and named so."""
    order = sorted(t.column_names, key=lambda c: (c != "window", not c.startswith("k"),
                                                  names.get(c, c)))  # fmt: skip
    return t.select(order).rename_columns([names.get(c, c) for c in order])


def _key_name(p: Path, by: tuple[Path, ...]) -> str:
    """A key's column: its last name, or the whole path where two would clash."""
    last = p.text.rsplit(".", 1)[-1]
    clash = sum(1 for o in by if o.text.rsplit(".", 1)[-1] == last) > 1
    return p.text.replace(".", "_") if clash else last


def _plain(arr: pa.Array) -> pa.Array:
    """Keys as plain values (dictionaries differ between blocks)."""
    if pa.types.is_dictionary(arr.type):
        return pc.cast(arr, arr.type.value_type)
    return arr


def _empty(plan: Plan, names: list[str]) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    fields = [pa.field("window_start", ts), pa.field("window_end", ts)]
    fields += [pa.field(n, arrow_type(p.type)[0]) for n, p in zip(names, plan.by, strict=False)]
    if len(names) > len(plan.by):
        fields.append(pa.field("seq", pa.int64()))
    for m, p in plan.measures:
        t = pa.int64() if p is None or m.op == "count" else arrow_type(p.type)[0]
        if m.name in plan.spans:
            t = pa.float64()
        if m.op == "sum":  # as Arrow's sums come out
            t = (pa.decimal128(38, t.scale) if pa.types.is_decimal(t)
                 else pa.float64() if pa.types.is_floating(t) else pa.int64())  # fmt: skip
        fields.append(pa.field(m.name, pa.float64() if m.op == "mean" else t))
    return pa.schema(fields).empty_table()


class _Rows:
    """A block's rows for a question: its events, or (``items``) its array's items with
    their event's fields beside each."""

    def __init__(self, block: RecordBlock, plan: Plan) -> None:
        self.block = block
        self.items = plan.items
        self.types = plan.tops
        self.tops: dict[str, pa.Array] = {}
        self.parents: npt.NDArray[np.int64] | None = None  # each item's event (items only)
        self.n = len(block)
        if self.items is not None:  # each item's event, from the offsets (no Arrow lists)
            col = block.columns[self.items]
            assert isinstance(col, ListColumn)
            self.lists = col
            offsets = np.asarray(col.offsets, dtype=np.int64)
            self.span = (int(offsets[0]), int(offsets[-1]))
            self.parents = np.repeat(np.arange(len(block)), np.diff(offsets))
            self.n = self.span[1] - self.span[0]

    def _top(self, name: str) -> pa.Array:
        """A top-level field, typed as batch mode types it (converted once per block)."""
        if name not in self.tops:
            b = self.block
            if name == "event_time":
                arr = pa.array(b.event_time, pa.timestamp("us", tz="UTC"))
            else:
                arr = converter(self.types[name])(b.columns[name], b.nulls.get(name))
            self.tops[name] = arr
        return self.tops[name]

    def _item(self, path: Path) -> pa.Array:
        """An item field per item: its own child column (a record's field in it: through
        the whole list, converted)."""
        if len(path.inner) > 1:
            return _inner(pc.list_flatten(self._top(path.top)), path.inner)
        lo, hi = self.span
        name = path.inner[0]
        nulls = self.lists.nulls.get(name)
        child = self.lists.children[name]
        part = child[lo:hi] if isinstance(child, np.ndarray) else child.take(slice(lo, hi))
        return converter(path.type)(part, None if nulls is None else nulls[lo:hi])

    def seq(self) -> pa.Array:
        """Each row's event's seq."""
        seq = self.block.seq
        return pa.array(seq if self.parents is None else seq[self.parents])

    def window(self, window_us: int) -> pa.Array:
        w = (self.block.event_time // window_us) * window_us
        return pa.array(w if self.parents is None else w[self.parents])

    def keep(self, where: tuple[tuple[Path, tuple[Any, ...]], ...]) -> pa.Array | None:
        mask = None
        for path, values in where:
            hit = pc.is_in(_plain(self._event_value(path)), value_set=pa.array(list(values)))
            mask = hit if mask is None else pc.and_(mask, hit)
        if mask is not None and self.parents is not None:
            mask = mask.take(self.parents)
        return mask

    def value(self, path: Path) -> pa.Array:
        """The path's value per row."""
        if path.item and self.items is not None:
            return self._item(path)
        if path.item:  # an item field per event: its items' sum (0 for no items)
            return self._item_sum(path)
        v = self._event_value(path)
        return v if self.parents is None else v.take(self.parents)

    def _event_value(self, path: Path) -> pa.Array:
        return _inner(self._top(path.top), path.inner)

    def _item_sum(self, path: Path) -> pa.Array:
        col = self.block.columns[path.top]
        assert isinstance(col, ListColumn) and len(path.inner) == 1
        values = np.asarray(col.children[path.inner[0]])
        if (mask := col.nulls.get(path.inner[0])) is not None:
            values = np.where(mask, 0, values)
        offsets = np.asarray(col.offsets, dtype=np.int64)
        sums = np.zeros(len(offsets) - 1, dtype=values.dtype)
        has = np.diff(offsets) > 0
        if has.any():
            sums[has] = np.add.reduceat(values, offsets[:-1][has])
        return converter(bare(path.type))(sums, None)


@functools.lru_cache(maxsize=512)
def _converter(doc: bytes) -> Any:
    return column_converter(orjson.loads(doc))


def converter(avro_type: Any) -> Any:
    """The column converter of an Avro type (built once per type, not per block)."""
    return _converter(orjson.dumps(avro_type))


def _inner(arr: pa.Array, names: tuple[str, ...]) -> pa.Array:
    for name in names:
        arr = pc.struct_field(arr, name)
    return arr
