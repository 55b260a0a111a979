"""Record surgery for byte-level faults: take one clean encoded record apart and put a
broken one together, in the sink's own format.

JSON records are parsed with orjson and dumped again; Avro records are decoded and encoded
with fastavro against the *raw* schema (logical types stripped: decimals stay bytes, times
stay longs), so a record survives the round trip exactly and only the fault changes it.
"""

from __future__ import annotations

import functools
import io
from typing import Any, cast

import orjson
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from datafactory.chaos.base import RenderContext

AVRO_MAGIC = b"\xc3\x01"


def split(clean: bytes, ctx: RenderContext) -> tuple[bytes, bytes, bytes]:
    """(prefix, body, suffix): the JSON line's newline, the Avro single-object header."""
    if ctx.format == "json":
        return b"", clean[:-1] if clean.endswith(b"\n") else clean, b"\n"
    if ctx.framed:
        return clean[:10], clean[10:], b""
    return b"", clean, b""


def join(prefix: bytes, body: bytes, suffix: bytes, ctx: RenderContext) -> bytes:
    if ctx.format == "json":
        body = body.replace(b"\n", b" ")  # one record stays one line
    return prefix + body + suffix


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


@functools.lru_cache(maxsize=256)
def _parsed(schema_json: bytes) -> Any:
    return parse_schema(orjson.loads(schema_json))


@functools.lru_cache(maxsize=256)
def avro_fingerprint(schema_json: bytes) -> bytes:
    canonical = to_parsing_canonical_form(parse_schema(orjson.loads(schema_json)))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


@functools.lru_cache(maxsize=64)
def _raw_doc(raw: bytes) -> bytes:
    return orjson.dumps(_strip_logical(orjson.loads(raw)))


def raw_doc(ctx: RenderContext) -> bytes:
    """The stream's schema without logical types, as JSON (cached)."""
    return _raw_doc(orjson.dumps(ctx.schema.raw))


def raw_schema(ctx: RenderContext) -> dict[str, Any]:
    """The stream's schema without logical types (a fresh copy to modify)."""
    out: dict[str, Any] = orjson.loads(raw_doc(ctx))
    return out


def load(clean: bytes, ctx: RenderContext) -> tuple[bytes, dict[str, Any]]:
    """(Avro header or b"", the record as a dict) from a clean encoded record."""
    prefix, body, _ = split(clean, ctx)
    if ctx.format == "json":
        return prefix, cast(dict[str, Any], orjson.loads(body))
    rec = schemaless_reader(io.BytesIO(body), _parsed(raw_doc(ctx)), None)
    return prefix, cast(dict[str, Any], rec)


def dump(
    record: dict[str, Any],
    ctx: RenderContext,
    schema: dict[str, Any] | bytes | None = None,
    *,
    honest: bool = True,
) -> bytes:
    """A record in the sink's format. Avro: written with ``schema`` (a dict or its JSON;
    default: the stream's); ``honest`` frames it with that schema's fingerprint, otherwise
    with the stream's own (a producer that lies about what it wrote)."""
    if ctx.format == "json":
        return join(b"", orjson.dumps(record), b"\n", ctx)
    if schema is None:
        doc = raw_doc(ctx)
    else:
        doc = schema if isinstance(schema, bytes) else orjson.dumps(schema)
    buf = io.BytesIO()
    schemaless_writer(buf, _parsed(doc), record)
    return frame(buf.getvalue(), ctx, doc, honest=honest)


def frame(body: bytes, ctx: RenderContext, doc: bytes, *, honest: bool = True) -> bytes:
    """An Avro body as the sink sends it: single-object framed (with the fingerprint of the
    schema ``doc``, or, not ``honest``, the stream's own) when the sink frames records."""
    if not ctx.framed:
        return body
    fp = avro_fingerprint(doc) if honest else ctx.schema.fingerprint
    return AVRO_MAGIC + fp + body


def field_type(f: dict[str, Any]) -> tuple[Any, bool]:
    """(the field's type without null, whether it is nullable)."""
    t = f["type"]
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        return (rest[0] if len(rest) == 1 else rest), "null" in t
    return t, False


def base_kind(t: Any) -> str:
    """string, long, int, double, boolean, bytes, enum, array, record, ..."""
    if isinstance(t, dict):
        if t.get("logicalType") == "decimal":
            return "decimal"
        return str(t["type"])
    return str(t)
