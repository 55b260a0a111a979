"""RecordBlock: the columnar unit of work that flows from a pack stream to the sinks.

A block holds a few thousand events of one event type as numpy columns. Packs fill blocks
with vectorised numpy; encoders turn whole blocks into bytes; nothing on the hot path walks
record by record unless it must.

Column kinds (all numpy underneath):

* a plain ``np.ndarray`` (int64 / float64 / bool) for numbers and flags; money is int64 in
  minor units (cents) with an Avro ``decimal`` schema giving the scale;
* :class:`DictColumn` for strings drawn from a pool (ids, enums): int32 codes into a tuple of
  strings, so encoders render each distinct string once;
* :class:`ListColumn` for arrays of records (basket line items): Arrow-style int32 offsets
  plus a dict of child columns;
* :class:`StructColumn` for a nested record (an order's shipping address): a child column
  per field, one row each per event.

Null masks live beside the columns (``True`` means null) and only for nullable fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from datafactory.engine.identity import event_ids

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class DictColumn:
    """Strings as int32 codes into a pool; the pool is shared between blocks."""

    codes: npt.NDArray[np.int32]
    pool: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.codes)

    def take(self, idx: npt.NDArray[np.intp] | slice) -> DictColumn:
        return DictColumn(self.codes[idx], self.pool)

    def to_list(self) -> list[str]:
        pool = self.pool
        return [pool[c] for c in self.codes.tolist()]


@dataclass(frozen=True, slots=True)
class ListColumn:
    """A list per row: ``offsets`` (len n+1, int32) over flat child columns.

    Lists of records have one child per field; lists of plain values one child, ``value``.
    ``nulls``: null masks of nullable record fields, by field name, over the flat children.
    """

    offsets: npt.NDArray[np.int32]
    children: Mapping[str, Column]
    nulls: Mapping[str, npt.NDArray[np.bool_]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, idx: npt.NDArray[np.intp] | slice) -> ListColumn:
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                idx = np.arange(start, stop, step)
            else:
                lo, hi = int(self.offsets[start]), int(self.offsets[stop])
                offsets = (self.offsets[start : stop + 1] - lo).astype(np.int32)
                return ListColumn(
                    offsets,
                    {k: _take(c, slice(lo, hi)) for k, c in self.children.items()},
                    {k: m[lo:hi] for k, m in self.nulls.items()},
                )
        lengths = np.diff(self.offsets)[idx]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        starts = self.offsets[:-1][idx]
        # flat child index: for each chosen row, its range of child rows
        flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]))
        return ListColumn(
            offsets,
            {k: _take(c, flat) for k, c in self.children.items()},
            {k: m[flat] for k, m in self.nulls.items()},
        )


@dataclass(frozen=True, slots=True)
class StructColumn:
    """A nested record per row: a child column per field (each as long as the block), with
    the null masks of its nullable fields. (Whether the record itself is null is the
    block's, or its parent's, null mask, as for any other column.)"""

    children: Mapping[str, Column]
    nulls: Mapping[str, npt.NDArray[np.bool_]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.children.values())))

    def take(self, idx: npt.NDArray[np.intp] | slice) -> StructColumn:
        return StructColumn(
            {k: _take(c, idx) for k, c in self.children.items()},
            {k: m[idx] for k, m in self.nulls.items()},
        )


Column: TypeAlias = "np.ndarray[Any, Any] | DictColumn | ListColumn | StructColumn"


def _take(col: Column, idx: npt.NDArray[np.intp] | slice) -> Column:
    if isinstance(col, DictColumn | ListColumn | StructColumn):
        return col.take(idx)
    return col[idx]


class Taken(Mapping[str, Any]):
    """Columns (or null masks) of a block at rows ``idx``, each taken when first read.

    The chaos chain drops and repeats rows with this (``RecordBlock.pick``): a compiled
    encoder reads the original columns through ``idx`` and nothing is copied; anything else
    that reads a column gets it taken, once.
    """

    __slots__ = ("_done", "base", "idx")

    def __init__(self, base: Mapping[str, Any], idx: npt.NDArray[np.intp]) -> None:
        self.base = base
        self.idx = idx
        self._done: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        out = self._done.get(name)
        if out is None:  # filled once per name (two threads at once: the same value twice)
            out = self._done[name] = _take(self.base[name], self.idx)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)

    def __contains__(self, name: object) -> bool:
        return name in self.base


def _concat_nulls(
    masks: list[tuple[Mapping[str, npt.NDArray[np.bool_]], int]],
) -> dict[str, npt.NDArray[np.bool_]]:
    """Null masks of parts (each: its masks by name, its length) as one (absent: not null)."""
    names = {k for m, _ in masks for k in m}
    return {
        k: np.concatenate([m[k] if k in m else np.zeros(n, dtype=np.bool_) for m, n in masks])
        for k in names
    }


class Patch:
    """Rewrites the encoded bytes of some rows (a byte-level fault), once per sink format.

    ``rows`` index the block; ``params`` (one per row) say what to do to each; ``render``
    maps (clean bytes, format, param, context) to the bytes that go out instead.
    """

    __slots__ = ("kind", "params", "rows", "step")

    def __init__(self, rows: npt.NDArray[np.intp], params: list[Any], step: Any, kind: str):
        self.rows = rows
        self.params = params
        self.step = step  # the chaos step that renders it
        self.kind = kind

    def __len__(self) -> int:
        return len(self.rows)

    def remap(self, idx: npt.NDArray[np.intp] | slice, n_old: int) -> Patch:
        """This patch's rows in ``block.take(idx)`` (a row taken twice is patched twice)."""
        where = np.full(n_old, -1, dtype=np.intp)
        where[self.rows] = np.arange(len(self.rows))
        picked = where[idx]
        new_rows = np.flatnonzero(picked >= 0)
        params = [self.params[i] for i in picked[new_rows].tolist()]
        return Patch(new_rows, params, self.step, self.kind)


class Label:
    """Rows of a block that carry a domain error of one ``kind`` (details: one per row)."""

    __slots__ = ("details", "kind", "rows")

    def __init__(self, kind: str, rows: npt.NDArray[np.intp], details: list[Any] | None = None):
        self.kind = kind
        self.rows = rows
        self.details = details if details is not None else [None] * len(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def remap(self, idx: npt.NDArray[np.intp] | slice, n_old: int) -> Label:
        where = np.full(n_old, -1, dtype=np.intp)
        where[self.rows] = np.arange(len(self.rows))
        picked = where[idx]
        new_rows = np.flatnonzero(picked >= 0)
        return Label(self.kind, new_rows, [self.details[i] for i in picked[new_rows].tolist()])


def concat(blocks: list[RecordBlock]) -> RecordBlock:
    """One block of the rows of ``blocks`` in order (same stream, same columns)."""
    blocks = [b for b in blocks if len(b)] or blocks[:1]
    if len(blocks) == 1:
        return blocks[0]
    first = blocks[0]
    patches: list[Patch] = []
    labels: list[Label] = []
    base = 0
    for b in blocks:
        patches += [Patch(p.rows + base, p.params, p.step, p.kind) for p in b.patches]
        labels += [Label(x.kind, x.rows + base, x.details) for x in b.labels]
        base += len(b)
    nulls = _concat_nulls([(b.nulls, len(b)) for b in blocks])
    return RecordBlock(
        stream=first.stream,
        seq=np.concatenate([b.seq for b in blocks]),
        event_time=np.concatenate([b.event_time for b in blocks]),
        key=np.concatenate([b.key for b in blocks]),
        columns={k: _concat_col([b.columns[k] for b in blocks]) for k in first.columns},
        nulls=nulls,
        patches=tuple(patches),
        labels=tuple(labels),
    )


def _concat_col(cols: list[Column]) -> Column:
    head = cols[0]
    if isinstance(head, DictColumn):
        dicts = [c for c in cols if isinstance(c, DictColumn)]
        longest = max((c.pool for c in dicts), key=len)
        # one pool, or pools that grew by appending (a pack's customers): codes stand as they
        # are against the longest (compared in C; the merge below is a Python loop per value)
        if all(
            c.pool is longest or (isinstance(c.pool, tuple) and longest[: len(c.pool)] == c.pool)
            for c in dicts
        ):
            return DictColumn(np.concatenate([c.codes for c in dicts]), longest)
        merged: dict[str, int] = {}
        parts = []
        for c in cols:
            assert isinstance(c, DictColumn)
            remap = np.array([merged.setdefault(v, len(merged)) for v in c.pool], dtype=np.int32)
            parts.append(remap[c.codes])
        return DictColumn(np.concatenate(parts), tuple(merged))
    if isinstance(head, ListColumn):
        lists = [c for c in cols if isinstance(c, ListColumn)]
        offsets = [np.zeros(1, dtype=np.int32)]
        base = 0
        for c in lists:
            offsets.append((c.offsets[1:] - c.offsets[0] + base).astype(np.int32))
            base += int(c.offsets[-1] - c.offsets[0])
        children = {
            k: _concat_col(
                [_take(c.children[k], slice(int(c.offsets[0]), int(c.offsets[-1]))) for c in lists]
            )
            for k in head.children
        }
        nulls = _concat_nulls(
            [
                ({k: m[int(c.offsets[0]) : int(c.offsets[-1])] for k, m in c.nulls.items()},
                 int(c.offsets[-1] - c.offsets[0]))
                for c in lists
            ]
        )  # fmt: skip
        return ListColumn(np.concatenate(offsets), children, nulls)
    if isinstance(head, StructColumn):
        structs = [c for c in cols if isinstance(c, StructColumn)]
        return StructColumn(
            {k: _concat_col([c.children[k] for c in structs]) for k in head.children},
            _concat_nulls([(c.nulls, len(c)) for c in structs]),
        )
    return np.concatenate(cols)  # type: ignore[arg-type]


def column_to_list(col: Column) -> list[Any]:
    """Python values of a column (reference path for tests, samples and slow encoders)."""
    if isinstance(col, DictColumn):
        return col.to_list()
    if isinstance(col, StructColumn):
        kids = _with_nulls({k: column_to_list(c) for k, c in col.children.items()}, col.nulls)
        return [dict(zip(kids, row, strict=True)) for row in zip(*kids.values(), strict=True)]
    if isinstance(col, ListColumn):
        kids = _with_nulls({k: column_to_list(c) for k, c in col.children.items()}, col.nulls)
        offs = col.offsets.tolist()
        if list(kids) == ["value"]:  # a list of plain values, not of records
            vals = kids["value"]
            return [vals[offs[r] : offs[r + 1]] for r in range(len(offs) - 1)]
        return [
            [{k: v[i] for k, v in kids.items()} for i in range(offs[r], offs[r + 1])]
            for r in range(len(offs) - 1)
        ]
    return list(col.tolist())


def _with_nulls(
    values: dict[str, list[Any]], nulls: Mapping[str, npt.NDArray[np.bool_]]
) -> dict[str, list[Any]]:
    for k, m in nulls.items():
        values[k] = [None if null else v for v, null in zip(values[k], m.tolist(), strict=True)]
    return values


@dataclass(slots=True)
class RecordBlock:
    """Events of one stream, columnar.

    ``seq`` is unique per (run, stream) and ascending within a block; ``event_time`` is epoch
    microseconds; ``key`` is the partition key (int64 entity id, rendered per sink).
    """

    stream: str
    seq: I64
    event_time: I64
    key: I64
    columns: Mapping[str, Column]
    nulls: Mapping[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    # byte-level chaos: rows whose encoded bytes a patch rewrites (see datafactory.chaos)
    patches: tuple[Patch, ...] = ()
    # domain errors a pack made on purpose (an invalid diagnosis code...): the engine writes
    # them to the chaos manifest as step "domain"; rows index this block
    labels: tuple[Label, ...] = ()

    def __len__(self) -> int:
        return len(self.seq)

    def take(self, idx: npt.NDArray[np.intp] | slice) -> RecordBlock:
        """Rows by slice or index array (slices are views, no copy); patches follow rows."""
        if isinstance(self.columns, Taken):  # still not taken: stays so (the indexes compose)
            return self.pick(np.arange(len(self))[idx])
        return self._rows(
            idx,
            {k: _take(c, idx) for k, c in self.columns.items()},
            {k: m[idx] for k, m in self.nulls.items()},
        )

    def pick(self, idx: npt.NDArray[np.intp], *, patches: bool = True) -> RecordBlock:
        """Rows by index array, like ``take``, but the columns are taken only when read
        (a compiled encoder reads them through ``idx``, see :class:`Taken`). ``patches``
        False: without the patches and labels (rows to encode clean)."""
        columns, nulls, rows = self.columns, self.nulls, idx
        if isinstance(columns, Taken) and (isinstance(nulls, Taken) or not nulls):
            rows = columns.idx[idx]
            columns = columns.base
            nulls = nulls.base if isinstance(nulls, Taken) else {}
        picked = Taken(columns, rows), Taken(nulls, rows) if nulls else {}
        return self._rows(idx, *picked, patches=patches)

    def _rows(
        self,
        idx: npt.NDArray[np.intp] | slice,
        columns: Mapping[str, Column],
        nulls: Mapping[str, npt.NDArray[np.bool_]],
        *,
        patches: bool = True,
    ) -> RecordBlock:
        n, keep = len(self), patches
        return RecordBlock(
            stream=self.stream,
            seq=self.seq[idx],
            event_time=self.event_time[idx],
            key=self.key[idx],
            columns=columns,
            nulls=nulls,
            patches=tuple(q for p in self.patches if keep and len(q := p.remap(idx, n))),
            labels=tuple(x for lb in self.labels if keep and len(x := lb.remap(idx, n))),
        )

    def with_patch(self, patch: Patch) -> RecordBlock:
        return dataclasses.replace(self, patches=(*self.patches, patch))

    def slices(self, size: int) -> Iterator[RecordBlock]:
        for start in range(0, len(self), size):
            yield self.take(slice(start, start + size))

    def event_ids(self, run_seed: int) -> npt.NDArray[np.bytes_]:
        return event_ids(run_seed, self.stream, self.seq)

    def to_records(self, run_seed: int) -> list[dict[str, Any]]:
        """Rows as dicts, in the block's own column representation (reference path)."""
        n = len(self)
        cols: dict[str, list[Any]] = {
            "event_id": [b.decode() for b in self.event_ids(run_seed).tolist()],
            "event_time": self.event_time.tolist(),
        }
        cols.update(
            _with_nulls({k: column_to_list(c) for k, c in self.columns.items()}, self.nulls)
        )
        names = list(cols)
        return [{k: cols[k][i] for k in names} for i in range(n)]
