"""Batch files: rows of one stream, one Hive partition, one shard and one seq range per file.

Layout (under the output prefix)::

    stream=retail.pos_transaction/dt=2024-01-01/[hour=00/]part-0003-<first seq>-<last seq>.parquet

Bytes are deterministic (no write times inside: gzip's mtime is 0, Avro's sync marker derives
from the seed, shard and seq), so a rerun writes the same file under the same name, and
"create only if absent" makes reruns safe: an existing file with the same checksum counts as
written, a different one is an error (the config or seed changed under the same output).

Targets: :class:`LocalTarget` (temp file + rename) and :class:`S3Target` (aiobotocore; one
PutObject up to ``part_size``, multipart above it; ``If-None-Match: *`` on both; failed
multipart uploads are aborted; the CompleteMultipartUpload answer is checked).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datafactory.encoders import build_encoder
from datafactory.encoders.arrow import ArrowConverter
from datafactory.engine.blocks import RecordBlock, concat
from datafactory.schema import EventSchema
from datafactory.sinks import aws, ocf

DAY_US = 86_400_000_000
MAX_PARTS = 10_000  # S3's limit on parts per multipart upload
HOUR_US = 3_600_000_000
CONTENT_TYPE = {
    "parquet": "application/vnd.apache.parquet",
    "jsonl": "application/x-ndjson",
    "avro": "application/avro",
}


class ExistsDifferentError(Exception):
    """A file of this name exists with other bytes: the same output, another config."""


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


class FileEncoder:
    """One stream's rows to file bytes in the batch's format."""

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

    def encode(self, block: RecordBlock, shard: int) -> bytes:
        if self.fmt == "parquet":
            return self._parquet(block)
        batch = self.encoder.encode(block)
        data = bytes(batch.contiguous())
        if self.fmt == "avro":
            sync = ocf.sync_marker(self.run_seed, block.stream, shard, int(block.seq[0]))
            return b"".join([ocf.header(self.schema, sync), *ocf.block(len(block), data, sync)])
        if self.compression == "gzip":
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as f:
                f.write(data)
            return buf.getvalue()
        if self.compression == "zstd":
            out = pa.BufferOutputStream()
            with pa.CompressedOutputStream(out, "zstd") as f:
                f.write(data)
            return bytes(out.getvalue().to_pybytes())
        return data

    def _parquet(self, block: RecordBlock) -> bytes:
        table = pa.Table.from_batches([self.arrow.batch(b) for b in block.slices(65_536)])
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            row_group_size=self.row_group_rows,
            compression=self.compression,
            store_schema=False,  # plain Parquet types: strings read back as strings
            write_statistics=True,
        )
        return bytes(sink.getvalue().to_pybytes())


def partition_of(t_us: int, by: str) -> str:
    when = dt.datetime.fromtimestamp(t_us // 1_000_000, dt.UTC)
    return f"dt={when:%Y-%m-%d}" + (f"/hour={when:%H}" if by == "hour" else "")


def split_files(blocks: list[RecordBlock], by: str) -> list[tuple[str, RecordBlock]]:
    """A chunk's rows of one stream grouped by Hive partition (their event time), in seq
    order within each."""
    block = concat(blocks) if len(blocks) > 1 else blocks[0]
    if not len(block):
        return []
    unit = HOUR_US if by == "hour" else DAY_US
    bucket = block.event_time // unit
    first, last = int(bucket.min()), int(bucket.max())
    if first == last:
        return [(partition_of(first * unit, by), block)]
    order = np.argsort(bucket, kind="stable")
    keys = bucket[order]
    cuts = np.flatnonzero(np.diff(keys)) + 1
    out = []
    for idx in np.split(order, cuts):
        part = block.take(idx)
        out.append((partition_of(int(bucket[idx[0]]) * unit, by), part))
    return out


def file_key(stream: str, partition: str, shard: int, block: RecordBlock, ext: str) -> str:
    first, last = int(block.seq.min()), int(block.seq.max())
    return f"stream={stream}/{partition}/part-{shard:04d}-{first:013d}-{last:013d}.{ext}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalTarget:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        pass

    async def put(self, key: str, data: bytes, digest: str, content_type: str) -> bool:
        """Create ``key`` with ``data``; False when it was already there, identical."""
        return await asyncio.to_thread(self._put, key, data, digest)

    def _put(self, key: str, data: bytes, digest: str) -> bool:
        path = self.root / key
        if path.exists():
            if sha256(path.read_bytes()) == digest:
                return False
            raise ExistsDifferentError(f"{path} exists with other content")
        self._replace(path, data)
        return True

    async def put_state(self, key: str, data: bytes) -> None:
        """A state snapshot: overwritten (pickles are not byte-stable across processes)."""
        await asyncio.to_thread(self._replace, self.root / key, data)

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    async def read(self, key: str) -> bytes | None:
        path = self.root / key
        return await asyncio.to_thread(lambda: path.read_bytes() if path.exists() else None)

    async def abort_incomplete(self) -> int:
        """Temp files of writers that were killed."""
        n = 0
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            n += 1
        return n


class S3Target:
    """aiobotocore; conditional create; multipart above ``part_size``."""

    def __init__(self, url: str, part_size: int, endpoint_url: str | None, region: str) -> None:
        rest = url[len("s3://") :]
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.part_size = part_size
        self.endpoint_url = endpoint_url
        self.region = region
        self._cm: Any = None
        self.client: Any = None

    async def open(self) -> None:
        self._cm = aws.client("s3", self.region, self.endpoint_url)
        self.client = await self._cm.__aenter__()

    async def close(self) -> None:
        cm, self._cm, self.client = self._cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                await self.client.create_bucket(**aws.bucket_args(self.bucket, self.region))
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def put(self, key: str, data: bytes, digest: str, content_type: str) -> bool:
        from botocore.exceptions import ClientError

        full = self.prefix + key
        meta = {"sha256": digest}
        try:
            if len(data) <= self.part_size:
                await self.client.put_object(
                    Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*",
                    ContentType=content_type, Metadata=meta,
                )  # fmt: skip
            else:
                await self._multipart(full, data, content_type, meta)
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = e.response.get("Error", {}).get("Code")
            if status == 412 or code == "PreconditionFailed":
                head = await self.client.head_object(Bucket=self.bucket, Key=full)
                if head.get("Metadata", {}).get("sha256") == digest:
                    return False
                raise ExistsDifferentError(
                    f"s3://{self.bucket}/{full} exists with other content"
                ) from e
            raise
        return True

    async def _multipart(
        self,
        key: str,
        data: bytes,
        content_type: str,
        meta: dict[str, str],
        conditional: bool = True,
    ) -> None:
        c = self.client
        up = await c.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type, Metadata=meta
        )
        upload_id = up["UploadId"]
        # S3 takes at most 10,000 parts: bigger files get bigger parts
        size = max(self.part_size, -(-len(data) // MAX_PARTS))
        try:
            parts = []
            view = memoryview(data)
            for i, off in enumerate(range(0, len(data), size), start=1):
                body = bytes(view[off : off + size])
                r = await c.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=i, Body=body
                )
                parts.append({"PartNumber": i, "ETag": r["ETag"]})
            done = await c.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **({"IfNoneMatch": "*"} if conditional else {}),
            )
            # S3 can answer 200 with an error in the body; botocore raises for those, and a
            # body without the object's ETag is not a completed upload either
            etag = str(done.get("ETag", ""))
            if (
                not etag
                or done.get("Key", key) != key
                or not etag.strip('"').endswith(f"-{len(parts)}")
            ):
                raise RuntimeError(f"CompleteMultipartUpload of {key}: unexpected answer {done}")
        except BaseException:
            try:
                await c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            finally:
                raise

    async def put_state(self, key: str, data: bytes) -> None:
        """A state snapshot: overwritten (pickles are not byte-stable across processes);
        multipart above ``part_size`` like the data."""
        full = self.prefix + key
        if len(data) <= self.part_size:
            await self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
            return
        await self._multipart(full, data, "application/octet-stream", {}, conditional=False)

    async def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            r = await self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError:
            return None
        async with r["Body"] as body:
            return bytes(await body.read())

    async def abort_incomplete(self) -> int:
        """Multipart uploads under the prefix that a killed run left open."""
        n = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for u in page.get("Uploads", []):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]
                )
                n += 1
        return n


def open_target(out: str, part_size: int, endpoint_url: str | None, region: str) -> Any:
    if out.startswith("s3://"):
        return S3Target(out, part_size, endpoint_url, region)
    return LocalTarget(out)
