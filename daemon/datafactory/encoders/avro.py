"""Avro binary against the shipped schema, one record after another in one buffer.

Record boundaries are kept, so message sinks can send records one by one and the file sink can
frame a whole batch as one Avro object-container block. The compiled fast path writes the
bytes straight from the block's columns; the fallback makes dicts (decimals as ``Decimal``)
and hands them to fastavro's schemaless writer.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import numpy as np
from fastavro import schemaless_writer

from datafactory.encoders import fast
from datafactory.encoders.base import EncodedBatch, Subst, splice
from datafactory.engine.blocks import RecordBlock
from datafactory.schema import EventSchema


def _decimal_fields(fields: list[dict[str, Any]]) -> dict[str, Any]:
    """Field name -> scale for decimals, or -> ("array" | "record", nested mapping) for
    arrays of records and nested records that hold decimals."""
    out: dict[str, Any] = {}
    for f in fields:
        t = f["type"]
        if isinstance(t, list):
            t = next((x for x in t if x != "null"), t)
        if not isinstance(t, dict):
            continue
        if t.get("logicalType") == "decimal":
            out[f["name"]] = int(t.get("scale", 0))
        elif t.get("type") == "array" and isinstance(t["items"], dict):
            if nested := _decimal_fields(t["items"].get("fields", [])):
                out[f["name"]] = ("array", nested)
        elif t.get("type") == "record" and (nested := _decimal_fields(t["fields"])):
            out[f["name"]] = ("record", nested)
    return out


def _fix(record: dict[str, Any], spec: dict[str, Any]) -> None:
    for name, scale in spec.items():
        v = record.get(name)
        if v is None:
            continue
        if isinstance(scale, tuple):
            kind, nested = scale
            for item in v if kind == "array" else (v,):
                _fix(item, nested)
        else:
            record[name] = Decimal(v).scaleb(-scale)


def to_avro_records(block: RecordBlock, schema: EventSchema, run_seed: int) -> list[dict[str, Any]]:
    """Rows as dicts in Avro's Python form (decimals as ``Decimal``)."""
    records = block.to_records(run_seed)
    spec = _decimal_fields(schema.fields)
    if spec:
        for r in records:
            _fix(r, spec)
    return records


class AvroEncoder:
    """Avro binary per record; the compiled fast path when built, else fastavro (same bytes)."""

    format = "avro"

    def __init__(
        self,
        schema: EventSchema,
        run_seed: int,
        *,
        fast_path: bool | None = None,
        single_object: bool = False,
    ) -> None:
        self.schema = schema
        self.run_seed = run_seed
        # Avro single-object encoding: C3 01 + the schema's CRC-64-AVRO fingerprint per record,
        # so a consumer knows which schema wrote each message
        self.prefix = schema.single_object_header if single_object else b""
        use_fast = fast.available() if fast_path is None else fast_path
        self.fast = (
            fast.FastRenderer(schema.fields, "avro", run_seed, prefix=self.prefix)
            if use_fast
            else None
        )

    def encode(
        self, block: RecordBlock, subst: Subst | None = None, *, fields: bool = False
    ) -> EncodedBatch:
        if self.fast is not None:
            return self.fast.batch(block, self.schema, subst, fields)
        buf = io.BytesIO()
        parsed = self.schema.parsed
        offsets = np.zeros(len(block) + 1, dtype=np.int64)
        for i, rec in enumerate(to_avro_records(block, self.schema, self.run_seed)):
            buf.write(self.prefix)
            schemaless_writer(buf, parsed, rec)
            offsets[i + 1] = buf.tell()
        batch = EncodedBatch(
            stream=block.stream,
            schema=self.schema,
            format=self.format,
            payload=buf.getbuffer(),
            offsets=offsets,
            block=block,
        )
        return splice(batch, subst)
