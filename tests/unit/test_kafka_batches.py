"""Record batches built by the compiled path, read back by aiokafka's own batch reader."""

from __future__ import annotations

import numpy as np
import pytest
from aiokafka.record.default_records import DefaultRecordBatch

from datafactory.encoders import _fastrender  # type: ignore[attr-defined]
from datafactory.encoders.json import JsonEncoder
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.drive import uniform_times
from datafactory.sinks.kafka import _encode_headers, build_record_batch
from datafactory_retail import RetailPack, RetailParams


def crc32c_reference(data: bytes) -> int:
    c = 0xFFFFFFFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def test_crc32c() -> None:
    assert _fastrender.crc32c(b"123456789") == 0xE3069283  # the standard check value
    data = bytes(range(256)) * 5 + b"tail"
    assert _fastrender.crc32c(data) == crc32c_reference(data)


@pytest.mark.parametrize("compression", ["none", "gzip", "lz4", "zstd", "snappy"])
def test_batch_round_trips_through_aiokafka(compression: str) -> None:
    gen = RetailPack(RetailParams(stores=5), SeedTree(3)).stream("pos_transaction")
    block = gen.generate(1000, uniform_times(300, 1_767_225_600_000_000, 1_767_225_660_000_000))
    batch = JsonEncoder(gen.schema, 3).encode(block)
    rows = np.array([5, 1, 299, 42], dtype=np.int64)
    base = [("event_type", b"retail.pos_transaction"), ("run", b"r1")]
    records, count, first, last = _fastrender.kafka_records(
        batch.payload,
        batch.offsets,
        rows,
        block.key,
        block.event_time // 1000,
        block.seq,
        _encode_headers(base),
        len(base),
        1,
        1 << 20,
    )
    assert count == 4
    buf = build_record_batch(records, count, first, last, compression)
    parsed = DefaultRecordBatch(bytes(buf))
    assert parsed.validate_crc()
    got = list(parsed)
    assert len(got) == 4
    for rec, r in zip(got, rows.tolist(), strict=True):
        assert rec.key == str(block.key[r]).encode()
        assert rec.value == bytes(batch.record(r))[:-1]  # the JSON object, no newline
        assert rec.timestamp == block.event_time[r] // 1000
        assert rec.headers == [*base, ("seq", str(block.seq[r]).encode())]


def test_batch_stops_at_max_bytes() -> None:
    gen = RetailPack(RetailParams(), SeedTree(3)).stream("pos_transaction")
    block = gen.generate(0, uniform_times(200, 0, 10**9))
    batch = JsonEncoder(gen.schema, 3).encode(block)
    rows = np.arange(200, dtype=np.int64)
    records, count, *_ = _fastrender.kafka_records(
        batch.payload,
        batch.offsets,
        rows,
        block.key,
        block.event_time // 1000,
        block.seq,
        b"",
        0,
        1,
        10_000,
    )
    assert 0 < count < 200 and len(records) <= 10_000
    with pytest.raises(ValueError, match="out of range"):
        _fastrender.kafka_records(
            batch.payload,
            batch.offsets,
            np.array([500], dtype=np.int64),
            block.key,
            block.event_time,
            block.seq,
            b"",
            0,
            1,
            10_000,
        )
