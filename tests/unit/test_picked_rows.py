"""What the chaos chain's fast path rests on: rows picked without copying columns, records
encoded with given bytes in some rows' place, where each field of a record is, and the
per-event hit test in C. Each is checked against the plain way of doing the same thing."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest

from datafactory.chaos import build_chain, parse_steps
from datafactory.chaos.base import RenderContext
from datafactory.chaos.chain import render_patches
from datafactory.encoders import fast
from datafactory.encoders.avro import AvroEncoder
from datafactory.encoders.base import splice
from datafactory.encoders.json import JsonEncoder
from datafactory.engine.blocks import RecordBlock, Taken, concat
from datafactory.schema import EventSchema, load_schema
from tests.unit.test_encoders import NESTED, ODD, nested_block, odd_block, pos_block

PATHS = [pytest.param(True, id="fast"), pytest.param(False, id="fallback")]
CASES = [
    pytest.param("retail.pos_transaction", id="pos"),
    pytest.param("odd", id="odd"),
    pytest.param("nested", id="nested"),
]


@pytest.fixture(autouse=True, scope="module")
def _fast_path_is_built() -> None:
    assert fast.available(), "the compiled renderer must be built for these tests"


def case(name: str) -> tuple[EventSchema, RecordBlock]:
    if name == "odd":
        return ODD, odd_block()
    if name == "nested":
        return NESTED, nested_block(40)
    return load_schema(name), pos_block(500)


def encoders(schema: EventSchema, fast_path: bool) -> list[Any]:
    return [
        JsonEncoder(schema, 4, fast_path=fast_path),
        AvroEncoder(schema, 4, fast_path=fast_path, single_object=True),
    ]


def payload(batch: Any) -> bytes:
    return b"".join(bytes(r) for r in batch.records())


def rows_for(n: int, seed: int = 1) -> np.ndarray[Any, Any]:
    """Rows as a chain leaves them: some dropped, some repeated, in order."""
    rng = np.random.default_rng(seed)
    reps = rng.choice([0, 1, 1, 1, 2], size=n)
    return np.repeat(np.arange(n), reps)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("fast_path", PATHS)
def test_picked_rows_encode_as_taken_rows(name: str, fast_path: bool) -> None:
    schema, block = case(name)
    idx = rows_for(len(block))
    picked, taken = block.pick(idx), block.take(idx)
    assert isinstance(picked.columns, Taken)
    for enc in encoders(schema, fast_path):
        assert payload(enc.encode(picked)) == payload(enc.encode(taken))
    # picks compose, a take of a picked block stays picked, and columns read equal
    again = rows_for(len(idx), seed=2)
    twice = picked.pick(again)
    assert isinstance(twice.columns, Taken) and twice.columns.base is block.columns
    sliced = picked.take(slice(3, 17))
    assert isinstance(sliced.columns, Taken)
    want = block.take(idx[again])
    for enc in encoders(schema, True):
        assert payload(enc.encode(twice)) == payload(enc.encode(want))
        assert payload(enc.encode(sliced)) == payload(enc.encode(taken.take(slice(3, 17))))
    assert repr(twice.to_records(4)) == repr(want.to_records(4))  # repr: NaN is NaN
    joined = concat([picked, block])
    assert repr(joined.to_records(4)) == repr(taken.to_records(4) + block.to_records(4))


def test_a_picked_column_is_taken_once_when_read() -> None:
    block = pos_block(50)
    picked = block.pick(np.array([3, 1, 1, 40]))
    first = picked.columns["store_id"]
    assert picked.columns["store_id"] is first
    assert first.codes.tolist() == block.columns["store_id"].codes[[3, 1, 1, 40]].tolist()
    assert set(picked.columns) == set(block.columns) and len(picked.columns) == len(block.columns)
    assert "store_id" in picked.columns and "nope" not in picked.columns


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("fast_path", PATHS)
def test_given_bytes_go_out_in_their_rows_place(name: str, fast_path: bool) -> None:
    schema, block = case(name)
    block = block.pick(rows_for(len(block)))
    rows = np.array(sorted({0, 2, len(block) // 2, len(block) - 1}), dtype=np.int64)
    subst = (rows, tuple(b"<row %d>" % r for r in rows.tolist()))
    for enc in encoders(schema, fast_path):
        clean = enc.encode(block)
        got = enc.encode(block, subst)
        want = [bytes(r) for r in clean.records()]
        for r, out in zip(*subst, strict=True):
            want[r] = out
        assert [bytes(r) for r in got.records()] == want
        assert payload(splice(clean, subst)) == b"".join(want)


def test_given_rows_must_ascend_within_the_block() -> None:
    schema, block = case("nested")
    enc = JsonEncoder(schema, 4, fast_path=True)
    for rows in ([3, 1], [2, 2], [-1], [len(block)]):
        with pytest.raises(ValueError, match="subst"):
            enc.encode(block, (np.array(rows, dtype=np.int64), tuple(b"x" for _ in rows)))
    with pytest.raises(TypeError, match="subst"):
        enc.encode(block, (np.array([1], dtype=np.int64), ("not bytes",)))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", CASES)
def test_fields_say_where_each_field_is(name: str) -> None:
    schema, block = case(name)
    block = block.pick(rows_for(len(block)))
    names = [f["name"] for f in schema.fields]
    batch = JsonEncoder(schema, 4, fast_path=True).encode(block, fields=True)
    assert batch.fields is not None and batch.fields.shape == (len(block), len(names) + 1)
    assert payload(batch) == payload(JsonEncoder(schema, 4, fast_path=True).encode(block))
    for i, rec in enumerate(batch.records()):
        data, at = bytes(rec), batch.fields[i].tolist()
        whole = orjson.loads(data)
        for j, name in enumerate(names):  # a field's bytes are ',"name":value' ('{' first)
            part = data[at[j] : at[j + 1]]
            assert orjson.loads(b"{" + part[1:] + b"}") == {name: whole[name]}
        assert data[at[-1] :] == b"}\n"
    framed = AvroEncoder(schema, 4, fast_path=True, single_object=True)
    avro = framed.encode(block, fields=True)
    assert avro.fields is not None and int(avro.fields[:, 0].min()) == 10  # after the header
    for i, rec in enumerate(avro.records()):
        data, at = bytes(rec), avro.fields[i].tolist()
        whole = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema.parsed, None)
        for j, f in enumerate(schema.fields):  # each field's bytes read back as its value
            one = fastavro.parse_schema({"type": "record", "name": "One", "fields": [f]})
            got = fastavro.schemaless_reader(io.BytesIO(data[at[j] : at[j + 1]]), one, None)
            assert repr(got) == repr({f["name"]: whole[f["name"]]})  # type: ignore[index]
        assert at[-1] == len(data)
    # encoders without the compiled path do not say, and give the same bytes
    plain = JsonEncoder(schema, 4, fast_path=False).encode(block, fields=True)
    assert plain.fields is None and payload(plain) == payload(batch)


@pytest.mark.parametrize("rate", [0.0, 1e-9, 0.01, 0.5, 0.999, 1.0])
def test_hits_and_draws_in_c_are_the_numpy_ones(
    rate: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = load_schema("retail.pos_transaction")
    block = pos_block(4000)
    block.seq = np.random.default_rng(7).integers(-(2**62), 2**62, len(block))
    (chain,) = [
        build_chain([c for _, c in parse_steps([{"step": "drop", "rate": rate}])[0]],
                    schema.event_type, schema, 3, lambda f: None)
    ]  # fmt: skip
    assert chain is not None
    step = chain.steps[0]
    native = step.select(block)
    draws = [step.hashes(block.seq, lane) for lane in range(4)]
    monkeypatch.setenv("DATAFACTORY_FAST_PATH", "0")
    assert np.array_equal(native, step.select(block))
    for lane in range(4):  # every other draw a step makes, in C and in numpy alike
        assert np.array_equal(draws[lane], step.hashes(block.seq, lane))
    assert np.array_equal(native, np.flatnonzero(step.uniform(block.seq) < rate))
    if 0.0 < rate < 1.0:
        assert 0 < len(native) < len(block) or rate < 1e-6


CHAIN = [
    {"step": "drop", "rate": 0.05},
    {"step": "duplicate", "rate": 0.05},
    {"step": "timestamp_skew", "rate": 0.05},
    {"step": "schema_drift", "rate": 0.2},
    {"step": "corrupt_bytes", "rate": 0.05},
]


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_a_chain_renders_the_same_records_on_either_path(fmt: str) -> None:
    """The fast path (picked rows, fields in place, given bytes) against the fallback
    (taken rows, whole-record round trips, a splice): the same faults; Avro the same bytes,
    JSON the same records."""
    schema = load_schema("retail.pos_transaction")
    out: dict[bool, Any] = {}
    for fast_path in (True, False):
        chain = build_chain(
            [c for _, c in parse_steps(CHAIN)[0]], schema.event_type, schema, 3, lambda f: None
        )
        assert chain is not None
        enc: Any = (
            JsonEncoder(schema, 3, fast_path=fast_path)
            if fmt == "json"
            else AvroEncoder(schema, 3, fast_path=fast_path, single_object=True)
        )
        ctx = RenderContext(fmt, schema, fmt == "avro", None)
        block = chain(pos_block(3000, seed=9))
        out[fast_path] = render_patches(enc, block, ctx, "s")
    (fast_batch, fast_faults), (slow_batch, slow_faults) = out[True], out[False]
    key = [(f.name, f.kind, f.seq.tolist()) for f in fast_faults]
    assert key == [(f.name, f.kind, f.seq.tolist()) for f in slow_faults]
    kinds = {f.kind for f in fast_faults}
    assert {"rename", "remove", "retype", "add", "version", "truncate"} <= kinds
    fast_records = [bytes(r) for r in fast_batch.records()]
    slow_records = [bytes(r) for r in slow_batch.records()]
    assert len(fast_records) == len(slow_records)
    if fmt == "avro":
        assert fast_records == slow_records
        return
    drifted = {int(s) for f in fast_faults if f.step == "schema_drift" for s in f.seq}
    for seq, a, b in zip(fast_batch.seqs().tolist(), fast_records, slow_records, strict=True):
        if seq in drifted:  # one field's text changed in place; the record reads the same
            assert orjson.loads(a) == orjson.loads(b) and list(orjson.loads(a)) == list(
                orjson.loads(b)
            )
        else:
            assert a == b
