"""The file sink: rotation, deterministic names, no overwrite, Avro containers."""

from __future__ import annotations

from pathlib import Path

import fastavro
import orjson

from datafactory.encoders.avro import AvroEncoder
from datafactory.encoders.json import JsonEncoder
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.drive import uniform_times
from datafactory.sinks.base import SinkContext
from datafactory.sinks.file import FileConfig, FileSink
from datafactory_retail import RetailPack, RetailParams


def blocks(n_blocks: int, size: int, span_us: int) -> list:  # type: ignore[type-arg]
    pack = RetailPack(RetailParams(stores=3, skus=50, customers=100), SeedTree(1))
    gen = pack.stream("pos_transaction")
    t0 = 1_767_225_600_000_000
    return [
        gen.generate(i * size, uniform_times(size, t0 + i * span_us, t0 + (i + 1) * span_us))
        for i in range(n_blocks)
    ]


async def write(tmp: Path, fmt: str, **kw: object) -> FileSink:
    cfg = FileConfig.model_validate({"type": "file", "path": str(tmp), "format": fmt, **kw})
    sink = FileSink("f", cfg, SinkContext("run1", 1))
    await sink.connect()
    enc = (JsonEncoder if fmt == "json" else AvroEncoder)(
        RetailPack.schema_for("pos_transaction"), 1
    )
    for b in blocks(10, 100, 60_000_000):
        await sink.write_batch(enc.encode(b))
    await sink.close()
    return sink


async def test_rotates_by_size_and_keeps_every_line(tmp_path: Path) -> None:
    sink = await write(tmp_path, "json", max_bytes="40KiB")
    files = sorted((tmp_path / "retail" / "pos_transaction").iterdir())
    assert [f.name for f in files][:2] == ["run1-000000.jsonl", "run1-000001.jsonl"]
    assert len(files) >= 3 and set(files) == set(sink.files_written)
    lines = [orjson.loads(x) for f in files for x in f.read_bytes().splitlines()]
    assert [r["transaction_id"] - 1_000_000_001 for r in lines] == list(range(1000))


async def test_rotates_by_event_time_span(tmp_path: Path) -> None:
    await write(tmp_path, "json", max_span="3m")
    files = sorted((tmp_path / "retail" / "pos_transaction").iterdir())
    assert len(files) == 4  # 10 one-minute blocks, a new file every 3 minutes: 3+3+3+1


async def test_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    await write(tmp_path, "json")
    first = (tmp_path / "retail/pos_transaction/run1-000000.jsonl").read_bytes()
    await write(tmp_path, "json")
    assert (tmp_path / "retail/pos_transaction/run1-000000.jsonl").read_bytes() == first
    assert (tmp_path / "retail/pos_transaction/run1-000001.jsonl").read_bytes() == first


async def test_avro_container_files_are_readable(tmp_path: Path) -> None:
    await write(tmp_path, "avro", max_bytes="30KiB")
    files = sorted((tmp_path / "retail" / "pos_transaction").glob("*.avro"))
    assert len(files) >= 2
    seen = []
    for f in files:
        with f.open("rb") as fh:
            seen += [r["transaction_id"] for r in fastavro.reader(fh)]
    assert seen == [1_000_000_001 + i for i in range(1000)]
