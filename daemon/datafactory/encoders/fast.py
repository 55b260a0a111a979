"""The compiled fast path shared by the JSON and Avro encoders.

A schema is compiled once per format into field compilers; per block they emit a small
*program* (tuples of op codes and numpy buffers, see ``_fastrender.c``) that the C extension
runs over every row. Strings and enums come from pools rendered once per pool object in the
target format (JSON text with quotes, or Avro length-prefixed UTF-8 / enum index).

``available()`` says whether the extension was built; ``DATAFACTORY_FAST_PATH=0`` turns it
off. The pure fallbacks (Arrow compute for JSON, fastavro for Avro) give the same bytes and
are tested against it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import orjson

from datafactory.encoders.base import EncodedBatch, Subst
from datafactory.encoders.varint import zigzag_varint
from datafactory.engine.blocks import DictColumn, ListColumn, RecordBlock, StructColumn, Taken
from datafactory.engine.identity import event_id_base
from datafactory.schema import EventSchema

try:  # built from _fastrender.c at install time
    from datafactory.encoders import _fastrender  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised on installs without a compiler
    _fastrender = None

# the extension module itself (None when not built), for other compiled helpers (Kafka batches)
NATIVE: Any = _fastrender

LIT, INT, DEC, TS, POOL, FIXED, BOOL, DOUBLE, NULLABLE, LIST, UUID, PADINT, TIME, JOIN = range(14)
ROWS, MARK = 14, 15  # rows a chaos chain picked; where each field starts
# TIME's styles (of epoch µs, UTC): 2026-03-02T10:04:05, 2026-03-02, 20260302100405, 20260302
ISO_SECONDS, DATE, HL7_SECONDS, HL7_DATE = range(4)
DAY_US = 86_400_000_000
FMT_CODE = {"json": 0, "avro": 1}

Fmt: TypeAlias = Literal["json", "avro"]
Op: TypeAlias = tuple[Any, ...]
FieldCompiler: TypeAlias = Callable[[Any, "npt.NDArray[np.bool_] | None"], list[Op]]


def enabled() -> bool:
    """The compiled paths are switched on (``DATAFACTORY_FAST_PATH=0`` turns every one off:
    the encoders', the chaos chain's, the packs' draws and loops)."""
    return os.environ.get("DATAFACTORY_FAST_PATH", "1") != "0"


def available() -> bool:
    return _fastrender is not None and enabled()


_POOLS: dict[tuple[int, str, tuple[str, ...] | None], tuple[Any, Any, bytes]] = {}
_POOLS_LOCK = threading.Lock()
# what JSON (as orjson writes it) escapes inside a string
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _pool(
    pool: tuple[str, ...], fmt: Fmt, symbols: tuple[str, ...] | None
) -> tuple[npt.NDArray[np.int64], bytes]:
    """(offsets, data) of a pool rendered in ``fmt``; cached while the pool lives."""
    key = (id(pool), fmt, symbols)
    hit = _POOLS.get(key)
    if hit is not None and hit[0] is pool:
        return hit[1], hit[2]
    with _POOLS_LOCK:  # encoders run in threads: render a big pool once, not once per thread
        hit = _POOLS.get(key)
        if hit is not None and hit[0] is pool:
            return hit[1], hit[2]
        offsets, data = render_pool(pool, fmt, symbols)
        if len(_POOLS) > 256:
            _POOLS.clear()
        _POOLS[key] = (pool, offsets, data)
        return offsets, data


def json_pool(pool: tuple[str, ...]) -> tuple[npt.NDArray[np.int64], bytes]:
    """A pool as JSON strings, back to back (offsets, data); shared with the Arrow fallback."""
    return _pool(pool, "json", None)


def render_pool(
    pool: tuple[str, ...], fmt: Fmt, symbols: tuple[str, ...] | None = None
) -> tuple[npt.NDArray[np.int64], bytes]:
    """Strings as the format writes them (JSON strings; Avro strings, or enum indexes),
    back to back: (offsets, data)."""
    if fmt == "json":
        encoded = [s.encode() for s in pool]
        if _NEEDS_ESCAPE.search("".join(pool)) is None:  # the common case: quote, no escapes
            offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
            np.cumsum([len(e) + 2 for e in encoded], out=offsets[1:])
            return offsets, b'"' + b'""'.join(encoded) + b'"' if encoded else b""
        parts = [orjson.dumps(s) for s in pool]
    elif symbols is not None:
        index = {s: i for i, s in enumerate(symbols)}
        missing = [s for s in pool if s not in index]
        if missing:
            raise ValueError(f"values not among the enum's symbols {symbols}: {missing[:5]}")
        parts = [zigzag_varint(index[s]) for s in pool]
    else:
        parts = [zigzag_varint(len(b)) + b for b in (s.encode() for s in pool)]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return offsets, b"".join(parts)


def _row_pool(values: Any, fmt: Fmt) -> Op:
    """Any string column, as a pool with one entry per row (slow, but correct)."""
    texts = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)
    offsets, data = render_pool(texts, fmt, None)  # one-off: not cached
    return (POOL, np.arange(len(texts), dtype=np.int32), offsets, data)


def _safe_ascii(col: npt.NDArray[np.bytes_]) -> bool:
    raw = np.ascontiguousarray(col).view(np.uint8)
    return not bool(
        ((raw < 0x20) & (raw != 0) | (raw >= 0x80) | (raw == 0x22) | (raw == 0x5C)).any()
    )


class _Rows:
    """Marker column: a column of the block a chaos chain picked rows of, read at ``rows``."""

    __slots__ = ("col", "rows")

    def __init__(self, col: Any, rows: npt.NDArray[np.int64]) -> None:
        self.col = col
        self.rows = rows


class _EventIds:
    """Marker column: render UUIDv8 event ids from seqs in C."""

    __slots__ = ("base", "seq")

    def __init__(self, seq: npt.NDArray[np.int64], base: int) -> None:
        self.seq = seq
        self.base = base


def _string(fmt: Fmt, symbols: tuple[str, ...] | None = None) -> FieldCompiler:
    def emit(col: Any, _m: object) -> list[Op]:
        if isinstance(col, _EventIds):
            return [(UUID, col.seq, col.base)]
        if isinstance(col, DictColumn):
            offsets, data = _pool(col.pool, fmt, symbols)
            return [(POOL, col.codes, offsets, data)]
        fixed = isinstance(col, np.ndarray) and col.dtype.kind == "S" and symbols is None
        if fixed and (fmt == "avro" or _safe_ascii(col)):
            return [(FIXED, np.ascontiguousarray(col))]
        return [_row_pool(col, fmt)]

    return emit


def _ints(col: Any, _m: object) -> list[Op]:
    return [(INT, np.ascontiguousarray(col))]


def _decimal(scale: int) -> FieldCompiler:
    def emit(col: Any, _m: object) -> list[Op]:
        return [(DEC, np.ascontiguousarray(col, dtype=np.int64), scale)]

    return emit


def _ts(col: Any, _m: object) -> list[Op]:
    return [(TS, np.ascontiguousarray(col, dtype=np.int64))]


def _date(fmt: Fmt) -> FieldCompiler:
    """Days since 1970-01-01: an Avro int, or a JSON string ``"2026-03-02"``."""

    def emit(col: Any, _m: object) -> list[Op]:
        days = np.ascontiguousarray(col, dtype=np.int64)
        if fmt == "avro":
            return [(INT, days)]
        return [(LIT, b'"'), (TIME, days * DAY_US, DATE), (LIT, b'"')]

    return emit


def _bool(col: Any, _m: object) -> list[Op]:
    return [(BOOL, np.ascontiguousarray(col, dtype=np.bool_))]


def _double(col: Any, _m: object) -> list[Op]:
    return [(DOUBLE, np.ascontiguousarray(col, dtype=np.float64))]


def _nullable(inner: FieldCompiler, null_index: int, value_index: int) -> FieldCompiler:
    def emit(col: Any, mask: npt.NDArray[np.bool_] | None) -> list[Op]:
        if mask is None:
            mask = np.zeros(len(col), dtype=np.bool_)
        return [(NULLABLE, np.ascontiguousarray(mask), inner(col, None), null_index, value_index)]

    return emit


def _record(
    fields: list[dict[str, Any]], fmt: Fmt, end: bytes = b"}", *, marks: bool = False
) -> FieldCompiler:
    """A record's ops; ``marks``: a MARK where each field starts (at its JSON key) and one
    where the last ends."""
    plan = []
    for i, f in enumerate(fields):
        lit = (b"{" if i == 0 else b",") + orjson.dumps(f["name"]) + b":"
        plan.append((lit, f["name"], compile_type(f["type"], fmt)))

    def emit(col: Any, _m: object) -> list[Op]:
        # a nested record's StructColumn, or (columns, null masks) of the event or an item
        columns, nulls = (col.children, col.nulls) if isinstance(col, StructColumn) else col
        ops: list[Op] = []
        picked: list[Op] = []  # consecutive fields read through the same rows: one ROWS op
        rows: Any = None
        for lit, name, fn in plan:
            col = columns[name]
            if not isinstance(col, _Rows) and picked:
                ops.append((ROWS, rows, picked))
                picked = []
            into = picked if isinstance(col, _Rows) else ops
            if marks:
                into.append((MARK, 0))
            if fmt == "json":
                into.append((LIT, lit))
            if isinstance(col, _Rows):
                rows = col.rows
                picked += fn(col.col, nulls.get(name))
            else:
                ops += fn(col, nulls.get(name))
        if picked:
            ops.append((ROWS, rows, picked))
        if marks:
            ops.append((MARK, 0))
        if fmt == "json":
            ops.append((LIT, end))
        return ops

    return emit


def _array(items: Any, fmt: Fmt) -> FieldCompiler:
    inner = compile_type(items, fmt)
    of_records = isinstance(items, dict) and items.get("type") == "record"

    def emit(col: ListColumn, _m: object) -> list[Op]:
        child: Any = (col.children, col.nulls) if of_records else col.children["value"]
        return [(LIST, np.ascontiguousarray(col.offsets, dtype=np.int32), inner(child, None))]

    return emit


def compile_type(t: Any, fmt: Fmt) -> FieldCompiler:
    if isinstance(t, list):
        kinds = [x for x in t if x != "null"]
        if len(kinds) != 1 or len(t) != 2:
            raise NotImplementedError(f"unions other than [null, X]: {t}")
        return _nullable(compile_type(kinds[0], fmt), t.index("null"), t.index(kinds[0]))
    if isinstance(t, dict):
        logical, base = t.get("logicalType"), t["type"]
        if logical == "decimal":
            return _decimal(int(t.get("scale", 0)))
        if logical == "timestamp-micros":
            return _ts
        if logical == "date":
            return _date(fmt)
        if base == "enum":
            return _string(fmt, tuple(t["symbols"]) if fmt == "avro" else None)
        if base == "array":
            return _array(t["items"], fmt)
        if base == "record":
            return _record(t["fields"], fmt)
        return compile_type(base, fmt)
    simple: dict[str, FieldCompiler] = {
        "string": _string(fmt),
        "int": _ints,
        "long": _ints,
        "boolean": _bool,
        "double": _double,
    }
    if t in simple:
        return simple[t]
    raise NotImplementedError(f"Avro type {t!r}")


class FastRenderer:
    """Schema compiled once for one format; ``render(block)`` -> (payload, offsets)."""

    def __init__(
        self, fields: list[dict[str, Any]], fmt: Fmt, run_seed: int, *, prefix: bytes = b""
    ) -> None:
        if _fastrender is None:
            raise RuntimeError("the _fastrender extension is not built")
        self.fmt = fmt
        self.run_seed = run_seed
        self.prefix: list[Op] = [(LIT, prefix)] if prefix else []
        self._emit = _record(fields, fmt, end=b"}\n")
        self._emit_marked = _record(fields, fmt, end=b"}\n", marks=True)
        self.nfields = len(fields)

    def program(self, block: RecordBlock, *, marks: bool = False) -> list[Op]:
        columns: dict[str, Any]
        picked, nulls = block.columns, block.nulls
        if isinstance(picked, Taken) and (
            not nulls or (isinstance(nulls, Taken) and nulls.idx is picked.idx)
        ):  # rows a chaos chain picked: read in place, nothing copied
            rows = np.ascontiguousarray(picked.idx, dtype=np.int64)
            columns = {k: _Rows(c, rows) for k, c in picked.base.items()}
            nulls = nulls.base if isinstance(nulls, Taken) else nulls
        else:
            columns = dict(picked)
        # event ids are computed in C from the seqs (same function as identity.event_ids)
        columns["event_id"] = _EventIds(
            np.ascontiguousarray(block.seq, dtype=np.int64),
            event_id_base(self.run_seed, block.stream),
        )
        columns["event_time"] = block.event_time
        emit = self._emit_marked if marks else self._emit
        return self.prefix + emit((columns, nulls), None)

    def render(
        self, block: RecordBlock, subst: Subst | None = None
    ) -> tuple[bytes, npt.NDArray[np.int64]]:
        """(payload, offsets) of the block; ``subst``: rows whose given bytes go out instead."""
        program = self.program(block)
        payload, offsets = _fastrender.render(FMT_CODE[self.fmt], len(block), program, subst)
        return payload, np.frombuffer(offsets, dtype=np.int64)

    def batch(
        self, block: RecordBlock, schema: EventSchema, subst: Subst | None, fields: bool
    ) -> EncodedBatch:
        """The block as its encoder hands it on (``fields``, unless ``subst``: with where
        each record's fields are)."""
        at = None
        if fields and subst is None:
            payload, offsets, at = self.render_fields(block)
        else:
            payload, offsets = self.render(block, subst)
        return EncodedBatch(
            block.stream, schema, self.fmt, memoryview(payload), offsets, block, fields=at
        )

    def render_fields(
        self, block: RecordBlock
    ) -> tuple[bytes, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(payload, offsets, fields): ``fields[i, j]`` is where top-level field ``j`` of
        record ``i`` starts, from the record's start (JSON: at its key), ``fields[i, -1]``
        where the last field ends."""
        program = self.program(block, marks=True)
        fmt = FMT_CODE[self.fmt]
        payload, offsets, marks = _fastrender.render(fmt, len(block), program, None, True)
        starts = np.frombuffer(offsets, dtype=np.int64)
        at = np.frombuffer(marks, dtype=np.int64).reshape(len(block), self.nfields + 1)
        return payload, starts, at - starts[:-1, None]
