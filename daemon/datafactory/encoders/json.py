"""JSON lines, exact and compact, built column-wise in Arrow's C++ kernels.

The encoder is compiled once from the Avro schema into a list of *pieces* per record: JSON
literals (``{"store_id":``) and Arrow string arrays holding each field's JSON text for every
row. ``binary_join_element_wise`` then lays the pieces side by side for the whole block; the
resulting string array's data buffer *is* the JSON-lines payload (zero copy).

Rendering rules (the same as :func:`reference_json` in the tests' eyes):

* strings from a pool are escaped once per distinct value (orjson), then taken by code;
* ints as decimal text; Avro ``decimal`` (int64 minor units) as exact decimal text
  (``12.30``); ``timestamp-micros`` as RFC 3339 UTC with microseconds
  (``2026-01-01T09:30:00.000123Z``); ``date`` (days) as ``"2026-01-01"``; doubles in shortest
  round-trip form, non-finite as null;
* nullable fields (``["null", X]``) are ``null`` where the block's null mask says so;
* arrays of records via list offsets and ``binary_join``; nested records as objects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from datafactory.encoders import fast
from datafactory.encoders.base import EncodedBatch, Subst, splice
from datafactory.engine.blocks import DictColumn, ListColumn, RecordBlock, StructColumn
from datafactory.schema import EventSchema

Piece: TypeAlias = "pa.Array | str"
# a renderer turns one column (+ optional null mask) into pieces for every row
Renderer: TypeAlias = Callable[[Any, "npt.NDArray[np.bool_] | None"], list[Piece]]


def _json_pool(pool: tuple[str, ...]) -> pa.Array:
    """The pool rendered as JSON strings (quoted, escaped): the compiled path's rendering and
    cache (pure Python, there with or without the extension), viewed as an Arrow array."""
    offsets, data = fast.json_pool(pool)
    return pa.Array.from_buffers(
        pa.string(), len(pool), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def _as_str(values: npt.NDArray[Any]) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _render_int(col: npt.NDArray[Any], _m: object) -> list[Piece]:
    return [_as_str(col)]


def _render_double(col: npt.NDArray[np.float64], _m: object) -> list[Piece]:
    arr = pa.array(col, mask=~np.isfinite(col))
    return [pc.fill_null(pc.cast(arr, pa.string()), "null")]


_BOOL_POOL = pa.array(["false", "true"])


def _render_bool(col: npt.NDArray[np.bool_], _m: object) -> list[Piece]:
    return [pc.take(_BOOL_POOL, pa.array(col.astype(np.int8)))]


def _decimal_renderer(scale: int, precision: int) -> Renderer:
    dtype = pa.decimal128(min(max(precision, scale + 1), 38), scale)

    def render(col: npt.NDArray[np.int64], _m: object) -> list[Piece]:
        words = np.empty((len(col), 2), dtype=np.int64)
        words[:, 0] = col
        words[:, 1] = col >> 63  # sign extension into the high word
        arr = pa.Array.from_buffers(dtype, len(col), [None, pa.py_buffer(words)])
        return [pc.cast(arr, pa.string())]

    return render


def _render_timestamp_us(col: npt.NDArray[np.int64], _m: object) -> list[Piece]:
    secs = col // 1_000_000
    micros = col - secs * 1_000_000
    uniq, inverse = np.unique(secs, return_inverse=True)
    pool = pa.array(
        [
            '"' + dt.datetime.fromtimestamp(int(s), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            for s in uniq.tolist()
        ],
        type=pa.string(),
    )
    frac = pc.utf8_lpad(_as_str(micros), 6, "0")
    return [pc.take(pool, pa.array(inverse.astype(np.int32))), frac, 'Z"']


def _render_date(col: npt.NDArray[np.int32], _m: object) -> list[Piece]:
    days = pa.array(np.asarray(col, dtype=np.int32), type=pa.int32()).cast(pa.date32())
    return ['"', pc.strftime(days, "%Y-%m-%d"), '"']


def _render_string(col: Any, _m: object) -> list[Piece]:
    if isinstance(col, DictColumn):
        return [pc.take(_json_pool(col.pool), pa.array(col.codes))]
    if isinstance(col, np.ndarray) and col.dtype.kind == "S" and _json_safe_ascii(col):
        return ['"', _fixed_ascii(col), '"']
    return [pa.array([orjson.dumps(_text(v)).decode() for v in col], type=pa.string())]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _json_safe_ascii(col: npt.NDArray[np.bytes_]) -> bool:
    raw = np.ascontiguousarray(col).view(np.uint8)
    return not bool(((raw < 0x20) | (raw >= 0x80) | (raw == 0x22) | (raw == 0x5C)).any())


def _join(pieces: Sequence[Piece]) -> pa.Array:
    merged: list[Piece] = []
    for p in pieces:  # fold neighbouring literals into one
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + p
        else:
            merged.append(p)
    return pc.binary_join_element_wise(*merged, "")


def _nullable(inner: Renderer) -> Renderer:
    def render(col: Any, mask: npt.NDArray[np.bool_] | None) -> list[Piece]:
        pieces = inner(col, None)
        if mask is None or not mask.any():
            return pieces
        return [pc.if_else(pa.array(mask), "null", _join(pieces))]

    return render


def _renderer_for(ftype: Any) -> Renderer:
    if isinstance(ftype, list):
        kinds = [t for t in ftype if t != "null"]
        if len(kinds) != 1:
            raise NotImplementedError(f"JSON encoder: unions other than [null, X]: {ftype}")
        return _nullable(_renderer_for(kinds[0]))
    if isinstance(ftype, dict):
        logical = ftype.get("logicalType")
        t = ftype["type"]
        if logical == "decimal":
            return _decimal_renderer(int(ftype.get("scale", 0)), int(ftype["precision"]))
        if logical == "timestamp-micros":
            return _render_timestamp_us
        if logical == "date":
            return _render_date
        if t == "enum":
            return _render_string
        if t == "array":
            return _array_renderer(ftype["items"])
        if t == "record":
            return _record_renderer(ftype["fields"], end="}")
        return _renderer_for(t)
    simple: dict[str, Renderer] = {
        "string": _render_string,
        "int": _render_int,
        "long": _render_int,
        "double": _render_double,
        "float": _render_double,
        "boolean": _render_bool,
    }
    if ftype in simple:
        return simple[ftype]
    raise NotImplementedError(f"JSON encoder: Avro type {ftype!r}")


def _array_renderer(items: Any) -> Renderer:
    """Arrays come as a ListColumn; records as its children, other items as child "value"."""
    item = _renderer_for(items)
    of_records = isinstance(items, dict) and items.get("type") == "record"

    def render(col: ListColumn, _m: object) -> list[Piece]:
        child: Any = (col.children, col.nulls) if of_records else col.children["value"]
        rendered = _join(item(child, None))
        lists = pa.ListArray.from_arrays(pa.array(col.offsets), rendered)
        return ["[", pc.binary_join(lists, ","), "]"]

    return render


def _record_renderer(fields: list[dict[str, Any]], *, end: str) -> Renderer:
    """A record's pieces; ``col`` is a nested record's StructColumn, or ``(columns, null
    masks)`` (of the event, or of an array's items), both mappings by field name."""
    plan = [
        (
            ("{" if i == 0 else ",") + orjson.dumps(f["name"]).decode() + ":",
            f["name"],
            _renderer_for(f["type"]),
        )
        for i, f in enumerate(fields)
    ]

    def render(col: Any, _m: object) -> list[Piece]:
        columns, nulls = (col.children, col.nulls) if isinstance(col, StructColumn) else col
        pieces: list[Piece] = []
        for literal, name, fn in plan:
            pieces.append(literal)
            pieces.extend(fn(columns[name], nulls.get(name)))
        pieces.append(end)
        return pieces

    return render


class JsonEncoder:
    """Compiled once per (sink, stream); ``encode`` is called per block.

    ``event_id`` and ``event_time`` come from the block's identity columns, the rest from
    its named columns. Uses the compiled fast path when it is built (and not switched off
    with ``DATAFACTORY_FAST_PATH=0``), else Arrow compute; both give the same bytes.
    """

    format = "json"

    def __init__(
        self, schema: EventSchema, run_seed: int, *, fast_path: bool | None = None
    ) -> None:
        self.schema = schema
        self.run_seed = run_seed
        self._render = _record_renderer(schema.fields, end="}\n")
        use_fast = fast.available() if fast_path is None else fast_path
        self.fast = fast.FastRenderer(schema.fields, "json", run_seed) if use_fast else None

    def render(self, block: RecordBlock) -> pa.Array:
        """One JSON line per row (newline included), as an Arrow string array."""
        columns: dict[str, Any] = dict(block.columns)
        columns["event_id"] = block.event_ids(self.run_seed)
        columns["event_time"] = block.event_time
        return _join(self._render((columns, block.nulls), None))

    def encode(
        self, block: RecordBlock, subst: Subst | None = None, *, fields: bool = False
    ) -> EncodedBatch:
        if self.fast is not None:
            return self.fast.batch(block, self.schema, subst, fields)
        batch = _batch_from_strings(self.render(block), block, self.schema, self.format)
        return splice(batch, subst)


def _fixed_ascii(ids: npt.NDArray[np.bytes_]) -> pa.Array:
    """Fixed-width ASCII (numpy ``S<n>``, no NULs) as an Arrow string array, zero copy."""
    n = len(ids)
    width = ids.dtype.itemsize
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(ids))]
    )


def _batch_from_strings(
    lines: pa.Array, block: RecordBlock, schema: EventSchema, fmt: str
) -> EncodedBatch:
    _, off_buf, data_buf = lines.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return EncodedBatch(
        stream=block.stream,
        schema=schema,
        format=fmt,
        payload=memoryview(data_buf),
        offsets=offsets.astype(np.int64),
        block=block,
    )
