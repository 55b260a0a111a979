"""Reading back what arrived: every message as (bytes, metadata), from files, Kafka topics,
S3 prefixes and Kinesis streams.

A source is a URI: a plain path or ``file:///dir``, ``kafka://host:port/topic``,
``s3://bucket/prefix?endpoint=http://127.0.0.1:4566&region=us-east-1`` or
``kinesis://stream?endpoint=...``. JSON lines are split per line; Avro object container
files are decoded (they hold no byte-level faults) and handed on as decoded records.
Kinesis is read from the beginning until nothing new arrives for ``quiet`` seconds; Kafka up
to its end offsets, read with care (Tansu reports them early, see ARCHITECTURE.md); a Kafka
read that stalls short of them fails rather than return part of the topic.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlparse


@dataclass(slots=True)
class Message:
    """One record as a consumer got it; ``value`` is None when ``record`` is already decoded."""

    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)
    where: str = ""  # partition / shard / file: order is only meaningful within one
    record: dict[str, Any] | None = None


class SourceError(Exception):
    pass


def _split_lines(data: bytes, where: str) -> list[Message]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [Message(line, where=where) for line in lines]


def _ocf(data: bytes, where: str) -> list[Message]:
    from fastavro import reader

    return [
        Message(None, where=where, record=cast(dict[str, Any], r)) for r in reader(io.BytesIO(data))
    ]


def _objects(name: str, data: bytes) -> list[Message]:
    if name.endswith(".avro"):
        return _ocf(data, name)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [
            Message(None, where=name, record=r) for r in pq.read_table(io.BytesIO(data)).to_pylist()
        ]
    return _split_lines(data, name)


async def read_files(root: Path, prefix: str = "") -> list[Message]:
    def scan() -> list[Message]:
        if not root.exists():
            raise SourceError(f"{root}: no such folder")
        out: list[Message] = []
        files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name.startswith(prefix)]
        for p in files:
            out += _objects(p.name, p.read_bytes())
        return out

    return await asyncio.to_thread(scan)


STALL = 10  # a Kafka read short of its end offsets waits up to this many times ``quiet``


async def read_kafka(bootstrap: str, topic: str, quiet: float) -> list[Message]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
    )
    await consumer.start()
    out: list[Message] = []
    try:
        parts = None
        for _ in range(20):
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            await consumer.topics()  # refreshes metadata
            await asyncio.sleep(0.25)
        if not parts:
            raise SourceError(f"kafka://{bootstrap}/{topic}: no such topic")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # Tansu's end offset is its last batch's base offset + 1 (see the module's docstring):
        # a position at or past it means that batch has been fetched, whole, so once every
        # partition is there, what is left is in the consumer's buffer and the first fetch
        # that brings nothing ends the read. Short of the end, the records exist: a broker
        # that keeps its log in S3 may take long over a fetch, so the read waits up to
        # STALL x ``quiet`` without a record, then fails (a partial read would be counted
        # as lost events).
        ends = await consumer.end_offsets(tps)
        last = time.monotonic()
        while True:
            at_end = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            batches = await consumer.getmany(timeout_ms=250, max_records=10_000)
            if at_end and not any(batches.values()):
                break
            for tp, msgs in batches.items():
                for m in msgs:
                    out.append(
                        Message(
                            m.value,
                            {k: v for k, v in (m.headers or ())},
                            f"{tp.topic}/{tp.partition}",
                        )
                    )
                if msgs:
                    last = time.monotonic()
            waited = time.monotonic() - last
            if waited >= STALL * quiet:
                at = {tp.partition: await consumer.position(tp) for tp in tps}
                end = {tp.partition: ends[tp] for tp in tps}
                raise SourceError(
                    f"kafka://{bootstrap}/{topic}: no record for {waited:.0f} s at offsets "
                    f"{at}, short of the end offsets {end}: the broker is too slow to read "
                    "back (nothing was counted from the partial read)"
                )
    finally:
        await consumer.stop()
    return out


def _aws_kwargs(q: dict[str, list[str]]) -> dict[str, Any]:
    kw: dict[str, Any] = {"region_name": q.get("region", ["us-east-1"])[0]}
    if "endpoint" in q:
        kw["endpoint_url"] = q["endpoint"][0]
        kw.setdefault("aws_access_key_id", "x")
        kw.setdefault("aws_secret_access_key", "x")
    return kw


async def read_s3(bucket: str, prefix: str, q: dict[str, list[str]]) -> list[Message]:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    out: list[Message] = []
    async with session.create_client("s3", **_aws_kwargs(q)) as s3:
        keys: list[str] = []
        async for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        for key in sorted(keys):
            obj = await s3.get_object(Bucket=bucket, Key=key)
            async with obj["Body"] as body:
                data = await body.read()
            out += _objects(key, data)
    return out


async def read_kinesis(stream: str, q: dict[str, list[str]], quiet: float) -> list[Message]:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    out: list[Message] = []
    async with session.create_client("kinesis", **_aws_kwargs(q)) as k:
        shards = (await k.list_shards(StreamName=stream))["Shards"]
        for shard in shards:
            sid = shard["ShardId"]
            it = (
                await k.get_shard_iterator(
                    StreamName=stream, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            last = time.monotonic()
            while it and time.monotonic() - last < quiet:
                resp = await k.get_records(ShardIterator=it, Limit=10_000)
                recs = resp.get("Records", [])
                out += [
                    Message(r["Data"], {"partition_key": r["PartitionKey"].encode()}, sid)
                    for r in recs
                ]
                it = resp.get("NextShardIterator")
                if recs:
                    last = time.monotonic()
                elif resp.get("MillisBehindLatest", 0) == 0:
                    break
    return out


async def read(uri: str, quiet: float = 3.0, name_prefix: str = "") -> list[Message]:
    """Every message at ``uri``."""
    u = urlparse(uri)
    q = parse_qs(u.query)
    if u.scheme in ("", "file"):
        return await read_files(Path(u.path if u.scheme else uri), name_prefix)
    if u.scheme == "kafka":
        return await read_kafka(u.netloc, u.path.lstrip("/"), quiet)
    if u.scheme == "s3":
        return await read_s3(u.netloc, u.path.lstrip("/"), q)
    if u.scheme == "kinesis":
        return await read_kinesis(u.netloc, q, quiet)
    raise SourceError(f"{uri}: unknown source; use a path, file://, kafka://, s3:// or kinesis://")
