"""Batch files: rows of one stream, one Hive partition and one shard per file, in seq order.

Layout (under the output prefix)::

    stream=retail.pos_transaction/dt=2024-01-01/[hour=00/]part-0003-<first seq>.parquet

A file is encoded a row group at a time (:class:`FileFormat`: Parquet row groups, JSON
lines through a streaming gzip or zstd, one Avro container block per row group), so it can
be written as it fills, however big it grows (see :mod:`datafactory.batch.write`).

Bytes are deterministic (no write times inside: gzip's mtime is 0, Avro's sync marker derives
from the seed, shard and first seq; files and row groups are cut at row counts), so a rerun
writes the same file under the same name, and "create only if absent"
(:mod:`datafactory.batch.targets`) makes reruns safe.
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datafactory.encoders import build_encoder
from datafactory.encoders.arrow import ArrowConverter
from datafactory.engine.blocks import RecordBlock, concat
from datafactory.schema import EventSchema
from datafactory.sinks import ocf

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
CONTENT_TYPE = {
    "parquet": "application/vnd.apache.parquet",
    "jsonl": "application/x-ndjson",
    "avro": "application/avro",
}


@dataclass(frozen=True)
class FileInfo:
    key: str  # relative to the output prefix
    stream: str
    rows: int
    bytes: int
    sha256: str
    first_seq: int
    last_seq: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stream": self.stream,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        }


def resolve_compression(fmt: str, compression: str | None) -> str:
    """The codec a format is written with (its default when None); ValueError for a pair
    that does not go together."""
    codec = compression or {"parquet": "zstd", "jsonl": "none", "avro": "none"}[fmt]
    if fmt == "avro" and codec != "none":
        raise ValueError("avro files are written uncompressed (none)")
    if fmt == "jsonl" and codec == "snappy":
        raise ValueError("jsonl takes gzip, zstd or none")
    return codec


class FileFormat:
    """One stream's files in the batch's format, a row group at a time."""

    def __init__(self, schema: EventSchema, fmt: str, compression: str | None, run_seed: int,
                 row_group_rows: int) -> None:  # fmt: skip
        self.schema, self.fmt = schema, fmt
        self.compression = resolve_compression(fmt, compression)
        self.run_seed = run_seed
        self.row_group_rows = row_group_rows
        if fmt == "parquet":
            self.arrow = ArrowConverter(schema, run_seed)
        else:
            self.encoder = build_encoder("json" if fmt == "jsonl" else "avro", schema, run_seed)

    @property
    def ext(self) -> str:
        if self.fmt == "jsonl" and self.compression == "gzip":
            return "jsonl.gz"
        if self.fmt == "jsonl" and self.compression == "zstd":
            return "jsonl.zst"
        return self.fmt

    def body(self, stream: str, shard: int, first_seq: int) -> Body:
        """A new file's encoder: ``add`` a row group's blocks at a time, then ``end``."""
        if self.fmt == "parquet":
            return ParquetBody(self)
        if self.fmt == "avro":
            return AvroBody(self, ocf.sync_marker(self.run_seed, stream, shard, first_seq))
        return JsonBody(self)

    def encode(self, block: RecordBlock, shard: int) -> bytes:
        """A whole file at once (row groups of ``row_group_rows``)."""
        body = self.body(block.stream, shard, int(block.seq[0]))
        parts = [body.add([b]) for b in block.slices(self.row_group_rows)]
        return b"".join([*parts, body.end()])


class _Drain:
    """A write-only file whose bytes are taken as they come."""

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def write(self, data: Any) -> int:
        b = bytes(data)
        self.parts.append(b)
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class Body:
    """One file's bytes as it grows, a row group at a time: ``prepare`` does the part that
    holds the GIL (Arrow conversion, record encoding), ``write`` the part that does not
    (Parquet encoding, compression) and returns the bytes the row group adds; ``end`` the
    rest (footer, trailer). ``add`` is both."""

    def prepare(self, blocks: list[RecordBlock]) -> Any:
        raise NotImplementedError

    def write(self, prepared: Any) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        raise NotImplementedError

    def add(self, blocks: list[RecordBlock]) -> bytes:
        return self.write(self.prepare(blocks))


class ParquetBody(Body):
    def __init__(self, fmt: FileFormat) -> None:
        self.fmt, self.out = fmt, _Drain()
        self.writer: pq.ParquetWriter | None = None

    def prepare(self, blocks: list[RecordBlock]) -> pa.Table:
        # one block first: driven streams come in many small blocks, and Arrow batches of a
        # few rows each cost more to convert and to write than their rows
        block = concat(blocks)
        blocks.clear()
        return pa.Table.from_batches([self.fmt.arrow.batch(s) for s in block.slices(65_536)])

    def write(self, table: pa.Table) -> bytes:
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self.out,
                table.schema,
                compression=self.fmt.compression,
                store_schema=False,  # plain Parquet types: strings read back as strings
                write_statistics=True,
            )
        elif not table.schema.equals(self.writer.schema):
            table = table.cast(self.writer.schema)
        self.writer.write_table(table, row_group_size=max(1, table.num_rows))
        return self.out.take()

    def end(self) -> bytes:
        if self.writer is not None:
            self.writer.close()
        return self.out.take()


def _records(fmt: FileFormat, blocks: list[RecordBlock]) -> tuple[int, bytes]:
    data = b"".join(bytes(fmt.encoder.encode(b).contiguous()) for b in blocks)
    return sum(len(b) for b in blocks), data


class JsonBody(Body):
    def __init__(self, fmt: FileFormat) -> None:
        self.fmt, self.out = fmt, _Drain()
        self.z: Any = None
        if fmt.compression == "gzip":
            self.z = gzip.GzipFile(fileobj=self.out, mode="wb", compresslevel=6, mtime=0)
        elif fmt.compression == "zstd":
            self.z = pa.CompressedOutputStream(pa.PythonFile(self.out, mode="w"), "zstd")

    def prepare(self, blocks: list[RecordBlock]) -> bytes:
        return _records(self.fmt, blocks)[1]

    def write(self, data: bytes) -> bytes:
        if self.z is None:
            return data
        self.z.write(data)
        return self.out.take()

    def end(self) -> bytes:
        if self.z is not None:
            self.z.close()
        return self.out.take()


class AvroBody(Body):
    """An object container file: the header, then one block per row group."""

    def __init__(self, fmt: FileFormat, sync: bytes) -> None:
        self.fmt, self.sync = fmt, sync
        self.started = False

    def prepare(self, blocks: list[RecordBlock]) -> tuple[int, bytes]:
        return _records(self.fmt, blocks)

    def write(self, prepared: tuple[int, bytes]) -> bytes:
        n, data = prepared
        parts = [] if self.started else [ocf.header(self.fmt.schema, self.sync)]
        self.started = True
        return b"".join([*parts, *ocf.block(n, data, self.sync)])

    def end(self) -> bytes:
        return b""


def partition_of(t_us: int, by: str) -> str:
    when = dt.datetime.fromtimestamp(t_us // 1_000_000, dt.UTC)
    return f"dt={when:%Y-%m-%d}" + (f"/hour={when:%H}" if by == "hour" else "")


def partition_unit(by: str) -> int:
    return HOUR_US if by == "hour" else DAY_US


def split_files(block: RecordBlock, by: str) -> list[tuple[int, RecordBlock]]:
    """A block's rows grouped by Hive partition (their event time): (the partition's start,
    its rows in seq order)."""
    if not len(block):
        return []
    unit = partition_unit(by)
    bucket = block.event_time // unit
    first = int(bucket.min())
    if first == int(bucket.max()):
        return [(first * unit, block)]
    order = np.argsort(bucket, kind="stable")
    keys = bucket[order]
    cuts = np.flatnonzero(np.diff(keys)) + 1
    return [(int(bucket[idx[0]]) * unit, block.take(idx)) for idx in np.split(order, cuts)]


def file_key(stream: str, partition: str, shard: int, first_seq: int, ext: str) -> str:
    """A file is named by its first row's seq: known when the file opens, so it can be
    written (and uploaded) as it fills."""
    return f"stream={stream}/{partition}/part-{shard:04d}-{first_seq:013d}.{ext}"
