"""``corrupt_value``: a field holds a value it must not.

Kinds: ``out_of_range`` (beyond the ``range`` a field declares in its schema, e.g. a negative
quantity: the record stays well-formed, only a semantic check catches it), ``null_required``
(null in a field that is not nullable), ``wrong_type`` (a number where a string belongs or
the other way round) and ``bad_enum`` (a symbol the enum does not have). JSON records carry
the bad value as is; Avro has no way to say it, so the record is written with a schema that
does and framed with the stream's fingerprint: a producer that lies about what it wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import Field

from datafactory.chaos import records
from datafactory.chaos.base import FaultLog, RenderContext, Step, StepConfig, target_fields
from datafactory.engine.blocks import ListColumn, Patch, RecordBlock

Kind = Literal["out_of_range", "null_required", "wrong_type", "bad_enum"]
KINDS: list[Kind] = ["out_of_range", "null_required", "wrong_type", "bad_enum"]
_NUMERIC = {"int", "long", "float", "double", "decimal"}


class CorruptValueConfig(StepConfig):
    step: Literal["corrupt_value"] = "corrupt_value"
    kinds: list[Kind] = Field(
        default_factory=lambda: list(KINDS),
        min_length=1,
    )


def _ranged(schema_fields: list[dict[str, Any]]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(field, child field of an array of records or None, the field) with a ``range``."""
    out: list[tuple[str, str | None, dict[str, Any]]] = []
    for f in schema_fields:
        t, _ = records.field_type(f)
        if "range" in f:
            out.append((f["name"], None, f))
        elif isinstance(t, dict) and t.get("type") == "array" and isinstance(t["items"], dict):
            out += [(f["name"], c["name"], c) for c in t["items"].get("fields", []) if "range" in c]
    return out


class CorruptValue(Step):
    Config = CorruptValueConfig
    byte_level = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        assert isinstance(cfg, CorruptValueConfig)
        wanted = cfg.fields
        fields = target_fields(self.schema, None)

        def ok(name: str) -> bool:
            return wanted is None or name in wanted

        self.by_kind: dict[str, list[Any]] = {
            "out_of_range": [r for r in _ranged(fields) if ok(r[0]) or ok(f"{r[0]}.{r[1]}")],
            "null_required": [
                f["name"] for f in fields if not records.field_type(f)[1] and ok(f["name"])
            ],
            "wrong_type": [
                f["name"]
                for f in fields
                if records.base_kind(records.field_type(f)[0]) in _NUMERIC | {"string"}
                and ok(f["name"])
            ],
            "bad_enum": [
                f["name"]
                for f in fields
                if records.base_kind(records.field_type(f)[0]) == "enum" and ok(f["name"])
            ],
        }
        self.kinds = [k for k in cfg.kinds if self.by_kind[k]]
        self._docs: dict[tuple[str, str, bytes], bytes] = {}
        if not self.kinds:
            raise ValueError(
                f"none of the kinds {cfg.kinds} applies to a field of {self.stream}"
                + (f" among {wanted}" if wanted else "")
            )

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        rows = self.select(block)
        if not len(rows):
            return block
        seq = block.seq[rows]
        kinds = np.array(self.kinds)[self.choice(seq, len(self.kinds))]
        picks = self.choice(seq, 1 << 30, lane=3)
        out = block
        for kind in self.kinds:
            sel = np.flatnonzero(kinds == kind)
            if not len(sel):
                continue
            kr = rows[sel]
            options = self.by_kind[kind]
            chosen = [options[p % len(options)] for p in picks[sel].tolist()]
            if kind == "out_of_range":
                out, changed, details = self._out_of_range(out, kr, chosen)
                log.add(self, kind, block, changed, details)
                continue
            log.add(self, kind, block, kr, [{"field": f} for f in chosen])
            out = out.with_patch(Patch(kr, [(kind, f) for f in chosen], self, kind))
        return out

    def _out_of_range(
        self, block: RecordBlock, rows: np.ndarray[Any, Any], chosen: list[Any]
    ) -> tuple[RecordBlock, np.ndarray[Any, Any], list[Any]]:
        """Block-level: below ``min`` (or above ``max``) of the field's declared range.
        Returns the rows really changed (an empty list has no item to break)."""
        cols = dict(block.columns)
        details: list[Any] = []
        changed: list[int] = []
        for r, (name, child, f) in zip(rows.tolist(), chosen, strict=True):
            t, _ = records.field_type(f)
            scale = int(t.get("scale", 0)) if isinstance(t, dict) else 0
            lo, hi = f["range"].get("min"), f["range"].get("max")
            bad = (
                Decimal(str(lo)) - Decimal(1 + r % 97)
                if lo is not None
                else Decimal(str(hi)) * 10 + 1
            )
            value = int(bad.scaleb(scale))
            col = cols[name]
            if child is None:
                col = cols[name] = np.array(col, copy=True)
                col[r] = value
                changed.append(r)
                details.append({"field": name, "value": str(bad)})
                continue
            assert isinstance(col, ListColumn)
            first = int(col.offsets[r])
            if first == int(col.offsets[r + 1]):  # an empty list: nothing to break
                continue
            kids = dict(col.children)
            kid = np.array(kids[child], copy=True)
            kid[first] = value
            kids[child] = kid
            cols[name] = col = ListColumn(col.offsets, kids, col.nulls)
            changed.append(r)
            details.append({"field": f"{name}[0].{child}", "value": str(bad)})
        out = block.take(slice(None))
        out.columns = cols
        return out, np.array(changed, dtype=np.intp), details

    def rendered_kind(self, param: Any, ctx: RenderContext) -> str:
        return str(param[0])

    def render(
        self, clean: bytes, param: Any, ctx: RenderContext, fields: Sequence[int] | None = None
    ) -> bytes:
        kind, name = param
        _, rec = records.load(clean, ctx)
        if kind == "null_required":
            rec[name] = None
        elif kind == "wrong_type":  # text where a number belongs, a number where text does
            v = rec[name]
            if self._texty(name, ctx):
                rec[name] = 12345
            else:
                rec[name] = f"#{v.hex() if isinstance(v, bytes) else v}"
        else:  # bad_enum
            rec[name] = "UNKNOWN_SYMBOL"
        if ctx.format == "json":
            return records.dump(rec, ctx)
        return records.dump(rec, ctx, self._schema(kind, name, ctx), honest=False)

    @staticmethod
    def _texty(name: str, ctx: RenderContext) -> bool:
        f = next(f for f in ctx.schema.raw["fields"] if f["name"] == name)
        return records.base_kind(records.field_type(f)[0]) in ("string", "enum")

    def _schema(self, kind: str, name: str, ctx: RenderContext) -> bytes:
        """The schema the lying producer really wrote with, built once per (kind, field)."""
        key = (kind, name, ctx.schema.fingerprint)
        doc = self._docs.get(key)
        if doc is None:
            schema = records.raw_schema(ctx)
            fields: list[dict[str, Any]] = schema["fields"]
            pos = next(i for i, f in enumerate(fields) if f["name"] == name)
            t = records.base_kind(records.field_type(ctx.schema.raw["fields"][pos])[0])
            if kind == "null_required":
                fields[pos] = {"name": name, "type": "null"}
            elif kind == "wrong_type":
                texty = t in ("string", "enum")
                fields[pos] = {"name": name, "type": "long" if texty else "string"}
            else:
                enum = dict(fields[pos]["type"])
                enum["symbols"] = [*enum["symbols"], "UNKNOWN_SYMBOL"]
                fields[pos] = {"name": name, "type": enum}
            doc = self._docs[key] = orjson.dumps(schema)
        return doc
