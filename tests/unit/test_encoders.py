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
from datafactory.encoders.arrow import ArrowConverter
from datafactory.encoders.avro import AvroEncoder, to_avro_records
from datafactory.encoders.json import JsonEncoder
from datafactory.engine.blocks import DictColumn, ListColumn, RecordBlock, StructColumn, concat
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
        if lt == "date":
            return '"' + (dt.date(1970, 1, 1) + dt.timedelta(days=v)).isoformat() + '"'
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


_DATE = {"type": "int", "logicalType": "date"}
_CENTS = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
NESTED = make_schema(
    "test.nested",
    {
        "type": "record",
        "name": "Nested",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "born", "type": _DATE},
            {
                "name": "ship",
                "type": ["null", {"type": "record", "name": "Ship", "fields": [
                    {"name": "city", "type": "string"},
                    {"name": "cost", "type": _CENTS},
                    {"name": "due", "type": ["null", _DATE]},
                    {"name": "geo", "type": {"type": "record", "name": "Geo", "fields": [
                        {"name": "lat", "type": "double"},
                        {"name": "tags", "type": {"type": "array", "items": "string"}},
                    ]}},
                ]}],
            },
        ],
    },
)  # fmt: skip


def nested_block(n: int = 6, first: int = 0) -> RecordBlock:
    """Nested records (one nullable, one inside it, with a list) and dates either side of
    1970, the ends of the years the encoders write included."""
    rows = np.arange(first, first + n)
    days = np.array([-1, 0, 1, 20_514, -719_162, 2_932_896])[rows % 6]  # 0001-01-01, 9999-12-31
    tags = ListColumn(
        np.concatenate([[0], np.cumsum(rows % 3)]).astype(np.int32),
        {"value": DictColumn((np.arange(int((rows % 3).sum())) % 2).astype(np.int32), ("a", "é"))},
    )
    geo = StructColumn({"lat": rows * 0.5 - 1.25, "tags": tags})
    ship = StructColumn(
        {
            "city": DictColumn((rows % 2).astype(np.int32), ("Oslo", 'Q"uote')),
            "cost": (rows * 1999 - 3).astype(np.int64),
            "due": (days // 2).astype(np.int32),
            "geo": geo,
        },
        {"due": rows % 4 == 1},
    )
    return RecordBlock(
        stream="test.nested",
        seq=rows.astype(np.int64),
        event_time=(rows * 1_000_000).astype(np.int64),
        key=np.zeros(n, dtype=np.int64),
        columns={"born": days.astype(np.int32), "ship": ship},
        nulls={"ship": rows % 5 == 2},
    )


@pytest.mark.parametrize("fast_path", PATHS)
def test_nested_records_and_dates_in_every_format(fast_path: bool) -> None:
    block = concat([nested_block(4), nested_block(8, first=4)])  # joined blocks keep their rows
    assert column_values(block.take(np.array([5, 1])))[0] == column_values(block)[5]
    records = block.to_records(3)
    assert records[1]["ship"]["due"] is None and records[2]["ship"] is None
    # JSON, against the reference written record by record
    batch = JsonEncoder(NESTED, 3, fast_path=fast_path).encode(block)
    text = bytes(batch.payload[: int(batch.offsets[-1])]).decode()
    assert text == "".join(ref_record(r, NESTED.fields) + "\n" for r in records)
    assert '"born":"0001-01-01"' in text and '"born":"9999-12-31"' in text
    assert '"born":"1969-12-31"' in text and '"ship":null' in text
    # Avro, read back by fastavro: dates as dates, decimals as Decimals, nested nulls kept
    avro = AvroEncoder(NESTED, 3, fast_path=fast_path).encode(block)
    for i, want in enumerate(records):
        got = fastavro.schemaless_reader(io.BytesIO(bytes(avro.record(i))), NESTED.parsed, None)
        assert got["born"] == dt.date(1970, 1, 1) + dt.timedelta(days=want["born"])
        if want["ship"] is None:
            assert got["ship"] is None
            continue
        assert got["ship"]["cost"] == Decimal(want["ship"]["cost"]).scaleb(-2)
        assert got["ship"]["geo"] == want["ship"]["geo"]
        due = want["ship"]["due"]
        assert got["ship"]["due"] == (
            None if due is None else dt.date(1970, 1, 1) + dt.timedelta(days=due)
        )
    # Arrow (Parquet): structs, date32, the same nulls
    table = ArrowConverter(NESTED, 3).batch(block).to_pylist()
    assert [r["ship"] is None for r in table] == [r["ship"] is None for r in records]
    assert table[0]["born"] == dt.date(1969, 12, 31)
    assert table[3]["ship"]["geo"] == records[3]["ship"]["geo"]
    assert table[4]["ship"]["cost"] == Decimal(records[4]["ship"]["cost"]).scaleb(-2)


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_nested_records_fast_path_and_fallback_are_the_same_bytes(fmt: str) -> None:
    cls = JsonEncoder if fmt == "json" else AvroEncoder
    block = nested_block(60)
    a = cls(NESTED, 8, fast_path=True).encode(block)
    b = cls(NESTED, 8, fast_path=False).encode(block)
    assert bytes(a.payload[: int(a.offsets[-1])]) == bytes(b.payload[: int(b.offsets[-1])])


def column_values(block: RecordBlock) -> list[Any]:
    return [r["ship"] for r in block.to_records(3)]
