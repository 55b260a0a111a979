"""Batch mode's pieces: Avro-typed Arrow conversion, deterministic Parquet bytes, the window,
retail shards (disjoint stores and customers, one price list, shard 1-of-1 = stream mode)."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datafactory.batch.output import FileFormat, file_key, partition_of, split_files
from datafactory.batch.runner import BatchError, window
from datafactory.encoders.arrow import ArrowConverter
from datafactory.engine.blocks import DictColumn, ListColumn, RecordBlock
from datafactory.engine.seeding import SeedTree
from datafactory.pack import Shard, registered_packs
from datafactory.runtime.drive import uniform_times
from datafactory.schema import load_schema, make_schema

T0 = 1_709_251_200_000_000  # 2024-03-01T00:00:00Z


def _schema() -> object:
    return make_schema("t.things", {
        "type": "record", "name": "Thing", "fields": [
            {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "name", "type": "string"},
            {"name": "note", "type": ["null", "string"], "default": None},
            {"name": "n", "type": "int"},
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal",
                                       "precision": 12, "scale": 2}},
            {"name": "tags", "type": {"type": "array", "items": {
                "type": "record", "name": "Tag", "fields": [
                    {"name": "k", "type": "string"},
                    {"name": "v", "type": ["null", "long"], "default": None}]}}},
        ]})  # fmt: skip


def _block() -> RecordBlock:
    return RecordBlock(
        stream="t.things",
        seq=np.arange(3, dtype=np.int64),
        event_time=np.array([T0, T0 + 1, T0 + 86_400_000_000], dtype=np.int64),
        key=np.zeros(3, dtype=np.int64),
        columns={
            # a pool that repeats a string (two SKUs with one product name)
            "name": DictColumn(np.array([2, 0, 1], dtype=np.int32), ("a", "b", "a", "zz")),
            "note": DictColumn(np.array([0, 0, 1], dtype=np.int32), ("x", "y")),
            "n": np.array([1, 2, 3], dtype=np.int32),
            "price": np.array([1999, -5, 0], dtype=np.int64),
            "tags": ListColumn(
                np.array([0, 2, 2, 3], dtype=np.int32),
                {
                    "k": DictColumn(np.array([0, 1, 0], dtype=np.int32), ("p", "q")),
                    "v": np.array([7, 8, 9], dtype=np.int64),
                },
                {"v": np.array([False, True, False])},
            ),
        },
        nulls={"note": np.array([False, True, False])},
    )


def test_arrow_types_and_values_follow_the_avro_schema() -> None:
    conv = ArrowConverter(_schema(), run_seed=1)  # type: ignore[arg-type]
    table = pa.Table.from_batches([conv.batch(_block())])
    rows = table.to_pylist()
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("price").type == pa.decimal128(12, 2)
    assert table.schema.field("n").type == pa.int32()
    assert not table.schema.field("name").nullable and table.schema.field("note").nullable
    assert [r["name"] for r in rows] == ["a", "a", "b"]
    assert [r["note"] for r in rows] == ["x", None, "y"]
    assert [r["price"] for r in rows] == [decimal.Decimal("19.99"), decimal.Decimal("-0.05"), 0]
    assert rows[0]["tags"] == [{"k": "p", "v": 7}, {"k": "q", "v": None}]
    assert rows[1]["tags"] == [] and rows[2]["tags"] == [{"k": "p", "v": 9}]
    assert rows[2]["event_time"] == dt.datetime(2024, 3, 2, tzinfo=dt.UTC)
    assert len(rows[0]["event_id"]) == 36


def test_parquet_bytes_are_the_same_every_time() -> None:
    enc = FileFormat(_schema(), "parquet", "zstd", 1, 1_000_000)  # type: ignore[arg-type]
    digests = {hashlib.sha256(enc.encode(_block(), 0)).hexdigest() for _ in range(5)}
    assert len(digests) == 1
    back = pq.read_table(pa.BufferReader(enc.encode(_block(), 0)))
    assert back.schema.field("name").type == pa.string()  # plain types, not dictionaries


def test_json_lines_gzip_is_deterministic_and_files_split_by_day() -> None:
    schema = load_schema("retail.pos_transaction")
    pk = registered_packs()["retail"]
    pack = pk(pk.Params(stores=3, customers=100, skus=50), SeedTree(2))
    block = pack.stream("pos_transaction").generate(0, uniform_times(100, T0, T0))
    block.event_time = T0 + np.arange(100, dtype=np.int64) * 3_600_000_000  # ~4 days
    parts = split_files(block, "day")
    assert [partition_of(p, "day") for p, _ in parts] == [
        f"dt=2024-03-0{d}" for d in (1, 2, 3, 4, 5)
    ]
    assert sum(len(b) for _, b in parts) == 100
    first = int(parts[1][1].seq[0])
    assert first == 24 and int(parts[1][1].seq[-1]) == 47
    assert file_key("retail.pos_transaction", partition_of(parts[1][0], "day"), 3, first,
                    "jsonl.gz") == (
        "stream=retail.pos_transaction/dt=2024-03-02/part-0003-0000000000024.jsonl.gz"
    )  # fmt: skip
    hourly = split_files(block, "hour")
    assert len(hourly) == 100 and partition_of(hourly[0][0], "hour") == "dt=2024-03-01/hour=00"
    enc = FileFormat(schema, "jsonl", "gzip", 2, 1_000_000)
    assert enc.encode(block, 0) == enc.encode(block, 0)


def test_window_dates_are_inclusive_times_exclusive() -> None:
    a, b = window("2024-01-01", "2024-12-31")
    assert (b - a) // 86_400_000_000 == 366
    a, b = window("2024-01-01T06:00:00Z", "2024-01-01T18:00:00")
    assert b - a == 12 * 3_600_000_000
    with pytest.raises(BatchError, match="must be after"):
        window("2024-01-02", "2024-01-01")


def test_retail_shards_split_the_chain_and_share_one_catalogue() -> None:
    pk = registered_packs()["retail"]
    params = pk.Params(stores=10, customers=1000, skus=200)
    whole = pk(params, SeedTree(4))
    one = pk(params, SeedTree(4), Shard(0, 1))
    assert whole.store_ids == one.store_ids  # one shard is stream mode's population
    assert np.array_equal(whole.store_weight, one.store_weight)
    parts = [pk(params, SeedTree(4), Shard(i, 3)) for i in range(3)]
    ids = [set(p.store_ids) for p in parts]
    assert set().union(*ids) == set(whole.store_ids) and sum(map(len, ids)) == 10
    assert abs(sum(p.shard_share for p in parts) - 1) < 1e-12
    assert sum(p.p.customers for p in parts) == 1000
    for p in parts:  # the same catalogue and prices everywhere
        assert np.array_equal(p.catalogue.popularity, whole.catalogue.popularity)
    pools = [p.customers.pool for p in parts]
    for p in parts:
        p.customers.advance(T0)
    pools = [set(p.customers.pool[: p.customers.n]) for p in parts]
    assert not pools[0] & pools[1] and not pools[1] & pools[2]
    # only shard 0 lists the catalogue's prices (the others would repeat them)
    assert parts[0].stream("price_change") and parts[0].prices.emit
    parts[1].stream("price_change")
    assert not parts[1].prices.emit
    with pytest.raises(ValueError, match="at least as many stores"):
        pk(pk.Params(stores=2), SeedTree(4), Shard(0, 3))


def test_packs_that_cannot_shard_say_so() -> None:
    from pydantic import BaseModel

    from datafactory.pack import Pack

    class NoParams(BaseModel):
        pass

    class Whole(Pack):  # a pack that keeps its population whole (the default)
        name = "whole"
        description = ""
        Params = NoParams
        streams = {}

        def stream(self, name: str) -> Any:
            raise KeyError(name)

    assert Whole.max_shards(NoParams()) == 1
    with pytest.raises(ValueError, match="cannot be split"):
        Whole(NoParams(), SeedTree(1), Shard(0, 2))
    retail = registered_packs()["retail"]
    assert retail.max_shards(retail.Params(stores=7)) == 7


def test_healthcare_shards_split_the_patients_and_number_claims_apart() -> None:
    from datafactory.batch.runner import prepare
    from datafactory.batch.simulate import ShardSimulation

    hc = registered_packs()["healthcare"]
    params = hc.Params(patients=600)
    whole, one = hc(params, SeedTree(3)), hc(params, SeedTree(3), Shard(0, 1))
    assert whole.care.patients == one.care.patients == (0, 600)
    parts = [hc(params, SeedTree(3), Shard(i, 3)) for i in range(3)]
    assert [p.care.patients for p in parts] == [(0, 200), (200, 400), (400, 600)]
    assert all(p.network.patient_ids == whole.network.patient_ids for p in parts)
    with pytest.raises(ValueError, match="at least as many patients"):
        hc(hc.Params(patients=2), SeedTree(3), Shard(0, 3))

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "hc.yaml"
        cfg.write_text(
            "packs: {healthcare: {params: {patients: 600}, streams: {claim: {}}}}\n"
            "sinks: {none: {type: stdout}}\n"
        )
        job, config = prepare(str(cfg), "2025-01-01", "2025-01-20", {"shards": 3})
        owners: dict[str, int] = {}
        for k in range(3):
            sim = ShardSimulation(config, Shard(k, 3), job.start_us, job.end_us)
            lo, hi = sim.packs["healthcare"].care.patients
            for chunk in sim.chunks():
                for block in (b for b in chunk.blocks if b.stream == "healthcare.claim"):
                    for doc in block.columns["resource"].to_list():  # type: ignore[union-attr]
                        claim = __import__("json").loads(doc)
                        patient = claim["patient"]["reference"]
                        number = int(claim["id"].removeprefix("claim-"))
                        assert claim["id"] not in owners  # unique across shards
                        owners[claim["id"]] = k
                        assert number // 10**12 == k
                        pid = next(r["id"] for r in claim["contained"] if r["id"] in patient)
                        assert lo < int(pid.removeprefix("pat-")) <= hi
        assert set(owners.values()) == {0, 1, 2}


def test_iot_shards_are_parts_of_the_fleet_with_global_ids() -> None:
    iot = registered_packs()["iot"]
    params = iot.Params(
        devices=90,
        sites=6,
        incidents=[
            {"kind": "stuck_at", "device": "D000050", "at": 3600},
            {"kind": "drift", "rate_per_day": 3.0},
            {"kind": "clock_skew", "at": 7200},
        ],
    )
    whole, one = iot(params, SeedTree(5)), iot(params, SeedTree(5), Shard(0, 1))
    assert whole.fleet.device_ids == one.fleet.device_ids
    assert np.array_equal(whole.fleet.type, one.fleet.type)
    parts = [iot(params, SeedTree(5), Shard(i, 3)) for i in range(3)]
    devices = [set(p.fleet.device_ids) for p in parts]
    assert set().union(*devices) == set(whole.fleet.device_ids) and sum(map(len, devices)) == 90
    sites = [set(p.fleet.site_ids) for p in parts]
    assert set().union(*sites) == set(whole.fleet.site_ids) and sum(map(len, sites)) == 6
    # the named device's incident is its shard's; the random one is everyone's, by share;
    # the timed one with no device is shard 0's
    named = [[i for i in p.p.incidents if i.device] for p in parts]
    assert [len(x) for x in named] == [0, 1, 0]
    rates = [sum(i.rate_per_day for i in p.p.incidents) for p in parts]
    assert abs(sum(rates) - 3.0) < 1e-9
    assert [len([i for i in p.p.incidents if i.at and not i.device]) for p in parts] == [1, 0, 0]
    # partition keys and alert numbers are global too
    assert parts[1].fleet.device_offset == 30 and parts[2].fleet.next_alert == 2 * 10**12 + 1
    with pytest.raises(ValueError, match="at least as many devices and sites"):
        iot(iot.Params(devices=90, sites=2), SeedTree(5), Shard(0, 3))
