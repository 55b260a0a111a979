"""``schema_drift``: the producer's schema changed under the consumers' feet.

Per hit event one change: ``rename`` a field (``x`` -> ``x_v2``), ``remove`` it, ``add`` an
unexpected field, ``retype`` it (number <-> string), or ``version``: the whole record written
with a new schema version (a field added with a default). Avro records are written with the
drifted schema and framed with *its* fingerprint, as an honest producer with a new schema
would; JSON records simply change shape. ``rate: 1.0`` with a ``schedule`` switches the whole
stream to the drifted shape mid-run.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import orjson
from fastavro import parse_schema, schemaless_reader
from pydantic import Field

from datafactory.chaos import records
from datafactory.chaos.base import FaultLog, RenderContext, Step, StepConfig, target_fields
from datafactory.encoders.varint import zigzag_varint
from datafactory.engine.blocks import RecordBlock

Change = Literal["rename", "remove", "add", "retype", "version"]
CHANGES: list[Change] = ["rename", "remove", "add", "retype", "version"]


class SchemaDriftConfig(StepConfig):
    step: Literal["schema_drift"] = "schema_drift"
    changes: list[Change] = Field(default_factory=lambda: list(CHANGES), min_length=1)


def _retyped(value: Any) -> tuple[Any, str]:
    """(the value as another type, that type in Avro): text becomes a number, anything
    else text, so the type always changes whatever the encoding made of the field."""
    if isinstance(value, str):
        return len(value), "long"
    if isinstance(value, bytes):
        return value.hex(), "string"
    if value is None:
        return 0, "long"
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=str).decode(), "string"
    return str(value), "string"


# what "add" and "version" append to a record: (JSON, before its closing brace; Avro)
_APPENDED = {
    "add": (b',"unexpected_field":"drift"}', b"\x0adrift"),  # a string of 5 bytes
    "version": (b',"schema_version":2}', b"\x04"),  # the int 2, zigzag-encoded
}


class SchemaDrift(Step):
    Config = SchemaDriftConfig
    byte_level = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields = [f["name"] for f in target_fields(self.schema, self.cfg.fields)]
        self._docs: dict[tuple[str, str, bytes], bytes] = {}
        self._fields: dict[tuple[str, bytes], tuple[int, Any]] = {}
        if not self.fields:
            raise ValueError(f"no field of {self.stream} to drift among {self.cfg.fields}")

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        rows = self.select(block)
        if not len(rows):
            return block
        cfg = self.cfg
        assert isinstance(cfg, SchemaDriftConfig)
        seq = block.seq[rows]
        which = self.choice(seq, len(cfg.changes))
        changes = [cfg.changes[i] for i in which.tolist()]
        fields = [self.fields[i] for i in self.choice(seq, len(self.fields), lane=3).tolist()]
        params = list(zip(changes, fields, strict=True))
        for i in sorted(set(which.tolist()), key=lambda i: cfg.changes[i]):
            change = cfg.changes[i]
            pos = np.flatnonzero(which == i)
            named = change not in ("add", "version")
            details = [{"change": change, "field": fields[j] if named else None} for j in pos]
            log.add(self, change, block, rows[pos], details)
        return self.patch(block, rows, params, "schema_drift")

    def rendered_kind(self, param: Any, ctx: RenderContext) -> str:
        return str(param[0])

    def render(
        self,
        clean: bytes,
        param: Any,
        ctx: RenderContext,
        fields: Sequence[int] | None = None,
    ) -> bytes:
        change, name = param
        if fields is not None and change in ("rename", "remove", "retype"):
            done = self._in_place(clean, change, name, ctx, fields)
            if done is not None:
                return done
        if change in _APPENDED or (change == "rename" and ctx.format != "json"):
            # a field added at the end, or a field renamed in Avro (the same bytes, another
            # schema): the clean record's bytes go on as they are, without a round trip
            prefix, body, suffix = records.split(clean, ctx)
            if ctx.format == "json":
                return records.join(prefix, body[:-1] + _APPENDED[change][0], suffix, ctx)
            tail = _APPENDED[change][1] if change in _APPENDED else b""
            return records.frame(body + tail, ctx, self._schema(change, name, ctx))
        _, rec = records.load(clean, ctx)
        if change == "rename":
            out = {(k + "_v2" if k == name else k): v for k, v in rec.items()}
        elif change == "remove":
            out = {k: v for k, v in rec.items() if k != name}
        elif change == "add":
            out = {**rec, "unexpected_field": "drift"}
        elif change == "retype":
            value, avro_type = _retyped(rec[name])
            out = {**rec, name: value}
            change = f"retype:{avro_type}"
        else:  # version: v2 of the schema adds a field with a default
            out = {**rec, "schema_version": 2}
        if ctx.format == "json":
            return records.dump(out, ctx)
        return records.dump(out, ctx, self._schema(change, name, ctx))

    def _in_place(
        self, clean: bytes, change: str, name: str, ctx: RenderContext, at: Sequence[int]
    ) -> bytes | None:
        """The change made to the field's own bytes (``at``: where each top-level field
        starts in ``clean``, and where the last ends), not a decode and encode of the whole
        record; the same record either way. None: this one needs the round trip."""
        j, value_type = self._field(name, ctx)
        lo, hi = at[j], at[j + 1]
        if ctx.format == "json":  # a field is its key and value: ',"name":value'
            key = b"," + orjson.dumps(name) + b":"
            if clean[lo : lo + len(key)] != key:
                return None
            if change == "remove":
                return clean[:lo] + clean[hi:]
            if change == "rename":
                renamed = b"," + orjson.dumps(name + "_v2") + b":"
                return clean[:lo] + renamed + clean[lo + len(key) :]
            value, _ = _retyped(orjson.loads(clean[lo + len(key) : hi]))
            return clean[: lo + len(key)] + orjson.dumps(value) + clean[hi:]
        prefix, body, _ = records.split(clean, ctx)
        lo, hi = lo - len(prefix), hi - len(prefix)
        if change == "remove":
            return records.frame(body[:lo] + body[hi:], ctx, self._schema(change, name, ctx))
        if change != "retype" or value_type is None:
            return None
        value, avro_type = _retyped(schemaless_reader(io.BytesIO(body[lo:hi]), value_type, None))
        if avro_type == "long":
            written = zigzag_varint(value)
        else:
            text = value.encode()
            written = zigzag_varint(len(text)) + text
        doc = self._schema(f"retype:{avro_type}", name, ctx)
        return records.frame(body[:lo] + written + body[hi:], ctx, doc)

    def _field(self, name: str, ctx: RenderContext) -> tuple[int, Any]:
        """(the field's position in the record, its Avro type parsed on its own: None when
        it names a type defined elsewhere in the schema)."""
        key = (name, ctx.schema.fingerprint)
        hit = self._fields.get(key)
        if hit is None:
            fields = records.raw_schema(ctx)["fields"]
            j = next(i for i, f in enumerate(fields) if f["name"] == name)
            try:
                value_type = parse_schema(fields[j]["type"])
            except Exception:  # a reference to a named type: the whole record's round trip
                value_type = None
            hit = self._fields[key] = (j, value_type)
        return hit

    def _schema(self, change: str, name: str, ctx: RenderContext) -> bytes:
        """The drifted schema's JSON, built once per (change, field)."""
        key = (change, name, ctx.schema.fingerprint)
        doc = self._docs.get(key)
        if doc is None:
            schema = records.raw_schema(ctx)
            fields: list[dict[str, Any]] = schema["fields"]
            pos = next(i for i, f in enumerate(fields) if f["name"] == name)
            if change == "rename":
                fields[pos] = {**fields[pos], "name": name + "_v2"}
            elif change == "remove":
                del fields[pos]
            elif change == "add":
                fields.append({"name": "unexpected_field", "type": "string"})
            elif change.startswith("retype:"):
                fields[pos] = {"name": name, "type": change.partition(":")[2]}
            else:
                fields.append({"name": "schema_version", "type": "int", "default": 2})
            doc = self._docs[key] = orjson.dumps(schema)
        return doc
