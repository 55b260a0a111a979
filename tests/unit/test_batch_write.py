"""A day written as it is simulated (datafactory.batch.write): row groups of a fixed size,
files cut at ``file_rows`` and when an hourly partition is past, every row once and in seq
order, the same bytes on every run, and the same content as one file written at once."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from datafactory.batch.output import FileFormat
from datafactory.batch.targets import LocalTarget
from datafactory.batch.write import DayWriter
from datafactory.engine.blocks import RecordBlock
from datafactory.engine.seeding import SeedTree
from datafactory.pack import registered_packs
from datafactory.runtime.drive import uniform_times

T0 = 1_709_251_200_000_000  # 2024-03-01T00:00:00Z
HOUR = 3_600_000_000
STREAM = "retail.pos_transaction"


def _blocks(n: int, size: int, hours: float) -> list[RecordBlock]:
    pk = registered_packs()["retail"]
    pack = pk(pk.Params(stores=3, customers=200, skus=50), SeedTree(9))
    gen = pack.stream("pos_transaction")
    times = T0 + np.linspace(0, hours * HOUR, n, endpoint=False).astype(np.int64)
    out = []
    for a in range(0, n, size):
        b = gen.generate(a, uniform_times(min(size, n - a), T0, T0))
        b.event_time = times[a : a + len(b)]
        out.append(b)
    return out


def _write(tmp: Path, blocks: list[RecordBlock], fmt: str, partition: str, file_rows: int,
           rg: int = 1_000) -> list[tuple[str, int, str]]:  # fmt: skip
    schema = registered_packs()["retail"].schema_for("pos_transaction")
    formats = {STREAM: FileFormat(schema, fmt, None, 9, rg)}

    async def go() -> list[tuple[str, int, str]]:
        target = LocalTarget(str(tmp))
        await target.open()
        w = DayWriter(target, formats, 2, partition, file_rows, fmt)
        for b in blocks:
            await w.add(b)
            await w.passed(int(b.event_time[-1]) - 1)  # as the simulation goes on
        files = await w.finish()
        return [(f.key, f.rows, f.sha256) for f in files]

    return asyncio.run(go())


def test_parquet_files_are_cut_at_file_rows_with_row_groups_of_their_size(tmp_path: Path) -> None:
    blocks = _blocks(7_500, 700, hours=2)
    files = _write(tmp_path / "a", blocks, "parquet", "day", file_rows=3_000)
    assert [rows for _, rows, _ in files] == [3_000, 3_000, 1_500]
    seqs: list[int] = []
    for key, rows, digest in files:
        path = tmp_path / "a" / key
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        meta = pq.ParquetFile(path).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == (
            [1_000] * (rows // 1_000) + ([rows % 1_000] if rows % 1_000 else [])
        )
        table = pq.read_table(path)
        first = int(key.rsplit("-", 1)[1].split(".")[0])
        assert first == len(seqs)  # named by its first row's seq
        seqs += list(range(first, first + table.num_rows))
    # every row once, in order, and the very rows of the blocks
    ids = [
        i
        for key, _, _ in files
        for i in pq.read_table(tmp_path / "a" / key)["event_id"].to_pylist()
    ]
    want = [i.decode() for b in blocks for i in b.event_ids(9).tolist()]
    assert ids == want and seqs == list(range(7_500))
    # the same bytes on a rerun; a file already there and identical is not an error
    assert _write(tmp_path / "b", blocks, "parquet", "day", 3_000) == files
    assert _write(tmp_path / "a", blocks, "parquet", "day", 3_000) == files


@pytest.mark.parametrize("fmt", ["jsonl", "avro"])
def test_hourly_files_close_when_their_hour_is_past(tmp_path: Path, fmt: str) -> None:
    blocks = _blocks(6_000, 500, hours=3)
    files = _write(tmp_path, blocks, fmt, "hour", file_rows=10**6)
    assert [k.split("/")[2] for k, _, _ in files] == ["hour=00", "hour=01", "hour=02"]
    assert [rows for _, rows, _ in files] == [2_000, 2_000, 2_000]
    whole = FileFormat(registered_packs()["retail"].schema_for("pos_transaction"), fmt, None, 9,
                       1_000)  # fmt: skip
    from datafactory.engine.blocks import concat

    rows = concat(blocks)
    first_hour = rows.take(slice(0, 2_000))
    data = (tmp_path / files[0][0]).read_bytes()
    if fmt == "jsonl":  # the same bytes as the hour encoded at once
        assert data == whole.encode(first_hour, 2)
        assert orjson.loads(data.split(b"\n")[0])["event_id"] == first_hour.event_ids(9)[0].decode()
    else:
        from fastavro import reader

        got = [str(r["event_id"]) for r in reader(io.BytesIO(data))]
        assert got == [i.decode() for i in first_hour.event_ids(9).tolist()]
