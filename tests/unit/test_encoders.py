"""Encoders against independent reference renderings written record by record."""

from __future__ import annotations

import datetime as dt
import io
import math
from decimal import Decimal
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest

from datafactory.encoders import fast
from datafactory.encoders.avro import AvroEncoder, to_avro_records
from datafactory.encoders.json import JsonEncoder
from datafactory.engine.blocks import DictColumn, ListColumn, RecordBlock
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.drive import uniform_times
from datafactory.schema import load_schema, make_schema
from datafactory.sinks import ocf
from datafactory_retail import RetailPack, RetailParams


def ref_value(v: Any, t: Any) -> str:
    """The JSON text of one value, written plainly from the Avro type."""
    if isinstance(t, list):
        if v is None:
            return "null"
        t = next(x for x in t if x != "null")
    if isinstance(t, dict):
        lt = t.get("logicalType")
        if lt == "decimal":
            s = int(t["scale"])
            sign = "-" if v < 0 else ""
            whole, frac = divmod(abs(v), 10**s)
            return f"{sign}{whole}.{frac:0{s}d}" if s else f"{sign}{whole}"
        if lt == "timestamp-micros":
            d = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=v)
            return '"' + d.strftime("%Y-%m-%dT%H:%M:%S.%f") + 'Z"'
        if t["type"] == "array":
            return "[" + ",".join(ref_value(x, t["items"]) for x in v) + "]"
        if t["type"] == "record":
            return ref_record(v, t["fields"])
        if t["type"] == "enum":
            return orjson.dumps(v).decode()
        t = t["type"]
    if t == "string":
        return orjson.dumps(v).decode()
    if t in ("int", "long"):
        return str(int(v))
    if t == "boolean":
        return "true" if v else "false"
    if t in ("double", "float"):
        return "null" if not math.isfinite(v) else repr(float(v))
    raise AssertionError(t)


def ref_record(rec: dict[str, Any], fields: list[dict[str, Any]]) -> str:
    inner = ",".join(
        orjson.dumps(f["name"]).decode() + ":" + ref_value(rec[f["name"]], f["type"])
        for f in fields
    )
    return "{" + inner + "}"


def pos_block(n: int, seed: int = 5) -> RecordBlock:
    pack = RetailPack(RetailParams(stores=7, skus=300, customers=999), SeedTree(seed))
    return pack.stream("pos_transaction").generate(
        10, uniform_times(n, 1_767_225_600_000_000, 1_767_312_000_000_000)
    )


PATHS = [pytest.param(True, id="fast"), pytest.param(False, id="fallback")]


@pytest.fixture(autouse=True, scope="module")
def _fast_path_is_built() -> None:
    # the compiled path is part of the build on every supported machine: fail loudly if not
    assert fast.available(), "datafactory.encoders._fastrender was not built"


@pytest.mark.parametrize("fast_path", PATHS)
def test_json_matches_reference_byte_for_byte(fast_path: bool) -> None:
    schema = load_schema("retail.pos_transaction")
    block = pos_block(3000)
    batch = JsonEncoder(schema, 5, fast_path=fast_path).encode(block)
    expected = "".join(ref_record(r, schema.fields) + "\n" for r in block.to_records(5))
    got = bytes(batch.payload[int(batch.offsets[0]) : int(batch.offsets[-1])]).decode()
    assert got == expected
    assert len(batch) == 3000
    assert orjson.loads(bytes(batch.record(17)))["transaction_id"] == 10 + 17 + 1_000_000_001


@pytest.mark.parametrize("fast_path", PATHS)
def test_json_of_a_slice_is_the_slice_of_json(fast_path: bool) -> None:
    schema = load_schema("retail.pos_transaction")
    block = pos_block(1000)
    enc = JsonEncoder(schema, 5, fast_path=fast_path)
    whole = enc.encode(block)
    part = enc.encode(block.take(slice(250, 600)))
    assert bytes(part.record(0)) == bytes(whole.record(250))
    assert bytes(part.record(349)) == bytes(whole.record(599))


ODD = make_schema(
    "test.odd",
    {
        "type": "record",
        "name": "Odd",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "label", "type": ["null", "string"]},
            {"name": "flag", "type": "boolean"},
            {"name": "x", "type": "double"},
            {
                "name": "amount",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 3},
            },
            {"name": "tags", "type": {"type": "array", "items": "string"}},
        ],
    },
)


def odd_block() -> RecordBlock:
    pool = ("plain", 'quote " and \\ backslash', "tab\tnew\nline", "ünïcödé ✓", "\x01ctl")
    n = 6
    tags = ListColumn(
        np.array([0, 0, 2, 3, 3, 5, 6], dtype=np.int32),
        {"value": DictColumn(np.array([0, 1, 2, 3, 4, 0], dtype=np.int32), pool)},
    )
    return RecordBlock(
        stream="test.odd",
        seq=np.arange(n, dtype=np.int64),
        event_time=np.array([0, 1, 999_999, 1_000_000, -1, 1_767_225_600_123_456], dtype=np.int64),
        key=np.zeros(n, dtype=np.int64),
        columns={
            "label": DictColumn(np.array([0, 1, 2, 3, 4, 1], dtype=np.int32), pool),
            "flag": np.array([True, False, True, True, False, False]),
            "x": np.array([0.1, -2.5, 1e300, float("nan"), float("inf"), 3.0]),
            "amount": np.array([0, -1, 1, -123_456, 10**15, -(10**15)], dtype=np.int64),
            "tags": tags,
        },
        nulls={"label": np.array([False, True, False, False, False, False])},
    )


@pytest.mark.parametrize("fast_path", PATHS)
def test_json_escapes_nulls_doubles_and_edge_values(fast_path: bool) -> None:
    block = odd_block()
    batch = JsonEncoder(ODD, 9, fast_path=fast_path).encode(block)
    lines = bytes(batch.payload[: int(batch.offsets[-1])]).decode().splitlines()
    assert len(lines) == 6
    for line, rec in zip(lines, block.to_records(9), strict=True):
        got = orjson.loads(line)
        want = orjson.loads(ref_record(rec, ODD.fields))
        assert got == want
    assert lines[1].split(',"flag"')[0].endswith('"label":null')
    assert '"amount":-123.456' in lines[3]
    assert '"amount":0.000' in lines[0] and '"amount":-0.001' in lines[1]
    assert '"event_time":"1969-12-31T23:59:59.999999Z"' in lines[4]
    assert '"x":null' in lines[3] and '"x":null' in lines[4]
    assert '"tags":[]' in lines[0]


@pytest.mark.parametrize("fast_path", PATHS)
def test_avro_round_trips_through_fastavro(fast_path: bool) -> None:
    schema = load_schema("retail.pos_transaction")
    block = pos_block(300)
    batch = AvroEncoder(schema, 5, fast_path=fast_path).encode(block)
    expected = to_avro_records(block, schema, 5)
    nested = block.columns["items"].nulls["promotion_id"]  # type: ignore[union-attr]
    assert nested.any() and not nested.all()
    for i in range(300):
        rec = fastavro.schemaless_reader(io.BytesIO(bytes(batch.record(i))), schema.parsed, None)
        assert str(rec["event_id"]) == expected[i]["event_id"]
        assert rec["total"] == expected[i]["total"]
        assert isinstance(rec["total"], Decimal)
        assert [x["sku"] for x in rec["items"]] == [x["sku"] for x in expected[i]["items"]]
        # nullable fields inside list items (promotion_id) keep their nulls
        promos = [x["promotion_id"] for x in rec["items"]]
        assert promos == [x["promotion_id"] for x in expected[i]["items"]]
        ts = rec["event_time"]
        assert int(ts.timestamp() * 1_000_000) == expected[i]["event_time"]


def test_ocf_framing_is_readable_and_deterministic() -> None:
    schema = load_schema("retail.pos_transaction")
    block = pos_block(200)
    enc = AvroEncoder(schema, 5)

    def container() -> bytes:
        sync = ocf.sync_marker(5, "s")
        out = io.BytesIO()
        out.write(ocf.header(schema, sync))
        for part in block.slices(64):
            b = enc.encode(part)
            for chunk in ocf.block(len(b), b.payload[: int(b.offsets[-1])], sync):
                out.write(chunk)
        return out.getvalue()

    data = container()
    assert data == container()
    records = list(fastavro.reader(io.BytesIO(data)))
    assert len(records) == 200
    assert records[199]["transaction_id"] == block.columns["transaction_id"][199]


@pytest.mark.parametrize("fast_path", PATHS)
@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_empty_block_encodes_to_nothing(fmt: str, fast_path: bool) -> None:
    schema = load_schema("retail.pos_transaction")
    block = pos_block(10).take(slice(0, 0))
    cls = JsonEncoder if fmt == "json" else AvroEncoder
    enc = cls(schema, 1, fast_path=fast_path)
    batch = enc.encode(block)
    assert len(batch) == 0 and batch.nbytes == 0


# JSON of the odd schema is left out: its doubles' shortest text differs in style between the
# two paths (1e+300 vs 1e300); both parse to the same values (test above).
@pytest.mark.parametrize(
    ("fmt", "schema_name"), [("json", "pos"), ("avro", "pos"), ("avro", "odd")]
)
def test_fast_path_and_fallback_give_identical_bytes(fmt: str, schema_name: str) -> None:
    if schema_name == "pos":
        schema, block = load_schema("retail.pos_transaction"), pos_block(2500, seed=8)
    else:
        schema, block = ODD, odd_block()
    cls = JsonEncoder if fmt == "json" else AvroEncoder
    a = cls(schema, 8, fast_path=True).encode(block)
    b = cls(schema, 8, fast_path=False).encode(block)
    assert bytes(a.payload[: int(a.offsets[-1])]) == bytes(b.payload[: int(b.offsets[-1])])
    assert np.array_equal(a.offsets, b.offsets)


def test_fast_path_rejects_values_it_cannot_render() -> None:
    block = odd_block()
    block.event_time[0] = 200_000 * 365 * 86_400 * 10**6  # year ~ 200000
    with pytest.raises(ValueError, match="timestamp outside years"):
        JsonEncoder(ODD, 9, fast_path=True).encode(block)


def test_avro_fast_path_rejects_unknown_enum_symbols() -> None:
    schema = load_schema("retail.pos_transaction")
    block = pos_block(5)
    ch = block.columns["channel"]
    assert isinstance(ch, DictColumn)
    block.columns["channel"] = DictColumn(ch.codes, ("store", "drone", "click_and_collect"))
    with pytest.raises(ValueError, match="drone"):
        AvroEncoder(schema, 9, fast_path=True).encode(block)


@pytest.mark.parametrize("fast_path", PATHS)
def test_avro_single_object_encoding(fast_path: bool) -> None:
    """Each record: C3 01, the 8-byte little-endian CRC-64-AVRO fingerprint, then the body."""
    schema = load_schema("retail.pos_transaction")
    block = pos_block(50)
    plain = AvroEncoder(schema, 5, fast_path=fast_path).encode(block)
    framed = AvroEncoder(schema, 5, fast_path=fast_path, single_object=True).encode(block)
    fp = crc64_avro(schema.canonical.encode()).to_bytes(8, "little")
    for i in (0, 49):
        rec = bytes(framed.record(i))
        assert rec[:2] == b"\xc3\x01" and rec[2:10] == fp
        assert rec[10:] == bytes(plain.record(i))


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint, written out from the specification."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_matches_the_spec_algorithm() -> None:
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F
    schema = load_schema("retail.pos_transaction")
    assert schema.fingerprint == crc64_avro(schema.canonical.encode()).to_bytes(8, "little")
