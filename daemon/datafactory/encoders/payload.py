"""Streams whose records are documents in their own format (a FHIR resource, an HL7 v2
message): the schema names the column that holds each record's bytes (``"x-payload"``), and
with ``format: json`` the record *is* that document (plus a newline in line formats; message
sinks send it as is). ``format: avro`` writes the schema's record (ids, time, payload) as
usual."""

from __future__ import annotations

import numpy as np

from datafactory.encoders.base import EncodedBatch, Subst, splice
from datafactory.engine.blocks import DictColumn, RecordBlock
from datafactory.schema import EventSchema


def payload_field(schema: EventSchema) -> str | None:
    name = schema.raw.get("x-payload")
    return str(name) if name else None


class PayloadEncoder:
    format = "json"

    def __init__(self, schema: EventSchema, run_seed: int) -> None:
        field = payload_field(schema)
        if field is None:
            raise ValueError(f"{schema.event_type}: the schema names no x-payload column")
        self.schema = schema
        self.field = field

    def encode(
        self, block: RecordBlock, subst: Subst | None = None, *, fields: bool = False
    ) -> EncodedBatch:
        """One document per record (a document's fields are not told: ``fields`` is
        ignored)."""
        docs = block.columns[self.field]
        assert isinstance(docs, DictColumn)  # one pool entry per document
        pool = docs.pool
        parts = [pool[c].encode() + b"\n" for c in docs.codes.tolist()]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        batch = EncodedBatch(
            block.stream, self.schema, self.format, memoryview(b"".join(parts)), offsets, block
        )
        return splice(batch, subst)
