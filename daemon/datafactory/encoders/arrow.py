"""Blocks to Arrow record batches, typed from the Avro schema (batch mode's Parquet).

Types follow the schema, not the numpy dtypes: ``timestamp-micros`` is
``timestamp[us, tz=UTC]``, ``date`` is ``date32``, ``decimal`` is ``decimal128(precision,
scale)`` (the block's int64 minor units are the unscaled value), ``int`` is int32, ``long``
int64, enums and strings are strings (dictionary-encoded where the block has a pool, which
Parquet keeps as dictionary pages), arrays of records are lists of structs, nested records
structs, ``["null", X]`` is a nullable X. Numeric columns go over without a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from datafactory.engine.blocks import DictColumn, RecordBlock, StructColumn
from datafactory.schema import EventSchema

Convert = Callable[[Any, Any], pa.Array]


def arrow_type(ftype: Any) -> tuple[pa.DataType, bool]:
    """The Arrow type of an Avro field type, and whether it is nullable."""
    if isinstance(ftype, list):
        kinds = [t for t in ftype if t != "null"]
        if len(kinds) != 1:
            raise NotImplementedError(f"Arrow: unions other than [null, X]: {ftype}")
        return arrow_type(kinds[0])[0], True
    if isinstance(ftype, dict):
        logical = ftype.get("logicalType")
        t = ftype["type"]
        if logical == "decimal":
            return _decimal_type(ftype), False
        if logical == "timestamp-micros":
            return pa.timestamp("us", tz="UTC"), False
        if logical == "date":
            return pa.date32(), False
        if t in ("enum", "string"):
            return pa.string(), False
        if t == "array":
            item, _ = arrow_type(ftype["items"])
            return pa.list_(pa.field("element", item, nullable=False)), False
        if t == "record":
            return pa.struct([_field(f) for f in ftype["fields"]]), False
        return arrow_type(t)
    simple = {
        "string": pa.string(),
        "int": pa.int32(),
        "long": pa.int64(),
        "double": pa.float64(),
        "float": pa.float32(),
        "boolean": pa.bool_(),
        "bytes": pa.binary(),
    }
    if ftype in simple:
        return simple[ftype], False
    raise NotImplementedError(f"Arrow: Avro type {ftype!r}")


def _decimal_type(ftype: Mapping[str, Any]) -> pa.DataType:
    scale = int(ftype.get("scale", 0))
    return pa.decimal128(min(max(int(ftype["precision"]), scale + 1), 38), scale)


def _field(f: Mapping[str, Any]) -> pa.Field:
    t, nullable = arrow_type(f["type"])
    return pa.field(f["name"], t, nullable=nullable)


def arrow_schema(schema: EventSchema) -> pa.Schema:
    return pa.schema([_field(f) for f in schema.fields])


def _with_nulls(arr: pa.Array, mask: npt.NDArray[np.bool_] | None) -> pa.Array:
    if mask is None or not mask.any():
        return arr
    validity = pa.array(~mask).buffers()[1]
    return pa.Array.from_buffers(
        arr.type, len(arr), [validity, *arr.buffers()[1:]], offset=arr.offset
    )


def column_converter(ftype: Any) -> Convert:
    """A block's column of the Avro type ``ftype`` (with its null mask) as an Arrow array."""
    atype, _ = arrow_type(ftype)
    if isinstance(ftype, list):
        inner = column_converter(next(t for t in ftype if t != "null"))
        return lambda col, mask: _nullable(inner(col, None), mask)
    t = ftype["type"] if isinstance(ftype, dict) else ftype
    logical = ftype.get("logicalType") if isinstance(ftype, dict) else None
    if logical == "decimal":
        return lambda col, _m: _decimal(col, atype)
    if logical == "timestamp-micros":
        return lambda col, _m: pa.Array.from_buffers(
            atype, len(col), [None, pa.py_buffer(np.ascontiguousarray(col, dtype=np.int64))]
        )
    if logical == "date":
        return lambda col, _m: pa.array(np.asarray(col, dtype=np.int32), pa.int32()).cast(atype)
    if t in ("string", "enum"):
        return lambda col, _m: _string(col)
    if t == "array":
        items = ftype["items"]
        if isinstance(items, dict) and items.get("type") == "record":
            struct = column_converter(items)
            return lambda col, _m: pa.ListArray.from_arrays(
                pa.array(col.offsets), struct((col.children, col.nulls), None)
            )
        item = column_converter(items)
        return lambda col, _m: pa.ListArray.from_arrays(
            pa.array(col.offsets), item(col.children["value"], None)
        )
    if t == "record":
        convs = [(f["name"], column_converter(f["type"]), _field(f)) for f in ftype["fields"]]

        def record(col: Any, _m: object) -> pa.Array:
            # a nested record's StructColumn, or (columns, null masks) of an array's items
            columns, nulls = (col.children, col.nulls) if isinstance(col, StructColumn) else col
            kids = [conv(columns[name], nulls.get(name)) for name, conv, _ in convs]
            return pa.StructArray.from_arrays(
                kids,
                fields=[
                    pa.field(f.name, k.type, nullable=f.nullable)
                    for (_, _, f), k in zip(convs, kids, strict=True)
                ],
            )

        return record
    return lambda col, _m: pa.array(np.asarray(col), type=atype)


def _nullable(arr: pa.Array, mask: npt.NDArray[np.bool_] | None) -> pa.Array:
    if mask is None or not mask.any():
        return arr
    if isinstance(arr, pa.StructArray):
        return pa.StructArray.from_arrays(
            arr.flatten(), fields=list(arr.type), mask=pa.array(mask, pa.bool_())
        )
    if isinstance(arr, pa.DictionaryArray):
        indices = arr.indices.to_numpy(zero_copy_only=False)
        return pa.DictionaryArray.from_arrays(pa.array(indices, mask=mask), arr.dictionary)
    return _with_nulls(arr, mask)


def _decimal(col: npt.NDArray[np.int64], atype: pa.DataType) -> pa.Array:
    words = np.empty((len(col), 2), dtype=np.int64)
    words[:, 0] = col
    words[:, 1] = np.asarray(col) >> 63  # sign extension into the high word
    return pa.Array.from_buffers(atype, len(col), [None, pa.py_buffer(words)])


# pools are long-lived tuples shared by every block: each is turned into Arrow once (None
# when it repeats a string); keyed by id with the pool held, so an id is never reused
_POOLS: dict[int, tuple[tuple[str, ...], pa.Array | None]] = {}
_POOLS_MAX = 256


def _pool_array(pool: tuple[str, ...]) -> pa.Array | None:
    hit = _POOLS.get(id(pool))
    if hit is not None and hit[0] is pool:
        return hit[1]
    arr = pa.array(pool, type=pa.string()) if len(set(pool)) == len(pool) else None
    if len(_POOLS) >= _POOLS_MAX:
        _POOLS.clear()
    _POOLS[id(pool)] = (pool, arr)
    return arr


def _used_codes(
    codes: npt.NDArray[np.int32], pool_size: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The pool entries in use (ascending) and each row's index among them: a mark per pool
    entry when the pool is not much bigger than the block (no sort), else ``np.unique``."""
    if pool_size > 8 * len(codes) + 1024:
        present, inverse = np.unique(codes, return_inverse=True)
        return present, inverse.astype(np.int32)
    mark = np.zeros(pool_size, dtype=np.bool_)
    mark[codes] = True
    rank = np.cumsum(mark, dtype=np.int32) - 1
    return np.flatnonzero(mark), rank[codes]


def _string(col: Any) -> pa.Array:
    if isinstance(col, DictColumn):
        # only the pool entries in use (an id pool grows far beyond a block), each distinct
        # string once: Parquet's writer is not deterministic for dictionaries with repeats
        used, inverse = _used_codes(col.codes, len(col.pool))
        pool_arr = _pool_array(col.pool)
        if pool_arr is not None:
            dictionary = pool_arr.take(pa.array(used))
            return pa.DictionaryArray.from_arrays(pa.array(inverse), dictionary)
        pool = col.pool
        first: dict[str, int] = {}
        lut = np.fromiter(
            (first.setdefault(pool[i], len(first)) for i in used.tolist()),
            dtype=np.int32,
            count=len(used),
        )
        dictionary = pa.array(list(first), type=pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(lut[inverse]), dictionary)
    if isinstance(col, np.ndarray) and col.dtype.kind == "S":
        n, width = len(col), col.dtype.itemsize
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        data = np.ascontiguousarray(col)
        if width and not (data.view(np.uint8) == 0).any():
            return pa.Array.from_buffers(
                pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
            )
    return pa.array([v.decode() if isinstance(v, bytes) else str(v) for v in col], pa.string())


class ArrowConverter:
    """Compiled once per stream; ``batch(block)`` per block."""

    def __init__(self, schema: EventSchema, run_seed: int) -> None:
        self.schema = schema
        self.run_seed = run_seed
        self.arrow_schema = arrow_schema(schema)
        self._plan = [(f["name"], column_converter(f["type"])) for f in schema.fields]

    def batch(self, block: RecordBlock) -> pa.RecordBatch:
        columns: dict[str, Any] = dict(block.columns)
        columns["event_id"] = block.event_ids(self.run_seed)
        columns["event_time"] = block.event_time
        arrays = [conv(columns[name], block.nulls.get(name)) for name, conv in self._plan]
        # dictionary-encoded strings keep their encoding in the batch's own schema
        fields = [
            pa.field(f.name, a.type, nullable=f.nullable)
            for f, a in zip(self.arrow_schema, arrays, strict=True)
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
