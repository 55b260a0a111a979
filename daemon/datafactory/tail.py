"""``datafactory tail kafka://TOPIC | kinesis://STREAM``: watch events arrive.

Avro messages in single-object encoding are decoded with the schema their fingerprint names
(a shipped one, or one of the streams of the scenario ``--config`` gives: a template's) and
printed as JSON; JSON messages are printed as they are. Without ``--bootstrap`` /
``--endpoint`` it finds the local stand-ins of a running ``provider: local`` run.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Iterable
from typing import Any

import orjson
from fastavro import schemaless_reader

from datafactory.lifecycle.manager import PREFERRED_PORTS, read_local_endpoints
from datafactory.schema import EventSchema, list_schemas, load_schema


def by_fingerprint(extra: Iterable[EventSchema] = ()) -> dict[bytes, EventSchema]:
    """The shipped schemas and ``extra`` ones, by fingerprint."""
    return {s.fingerprint: s for s in (*(load_schema(t) for t in list_schemas()), *extra)}


def render(value: bytes, schemas: dict[bytes, EventSchema]) -> bytes:
    if value[:2] == b"\xc3\x01" and len(value) >= 10:
        schema = schemas.get(value[2:10])
        if schema is None:
            return (
                b'{"error": "unknown schema fingerprint %s (a template stream? give its '
                b'scenario: --config)"}' % value[2:10].hex().encode()
            )
        rec = schemaless_reader(io.BytesIO(value[10:]), schema.parsed, None)
        return orjson.dumps(rec, default=str)
    return value.rstrip(b"\n")


async def tail_kafka(
    topic: str, bootstrap: str, n: int | None, beginning: bool, schemas: dict[bytes, EventSchema]
) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest" if beginning else "latest",
    )
    await consumer.start()
    shown = 0
    try:
        while n is None or shown < n:
            batch = await consumer.getmany(timeout_ms=500)
            values = [m.value for msgs in batch.values() for m in msgs]
            for value in values[: None if n is None else n - shown]:
                sys.stdout.buffer.write(render(value, schemas) + b"\n")
                shown += 1
            sys.stdout.flush()
    finally:
        await consumer.stop()
    return 0


async def tail_kinesis(
    stream: str,
    endpoint: str | None,
    n: int | None,
    beginning: bool,
    schemas: dict[bytes, EventSchema],
) -> int:
    import aiobotocore.session

    kwargs: dict[str, Any] = {"region_name": "us-east-1"}
    if endpoint:
        kwargs.update(endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x")
    shown = 0
    async with aiobotocore.session.get_session().create_client("kinesis", **kwargs) as c:
        shards = (await c.list_shards(StreamName=stream))["Shards"]
        kind = "TRIM_HORIZON" if beginning else "LATEST"
        its = [
            (
                await c.get_shard_iterator(
                    StreamName=stream, ShardId=s["ShardId"], ShardIteratorType=kind
                )
            )["ShardIterator"]
            for s in shards
        ]
        while n is None or shown < n:
            for i, it in enumerate(its):
                limit = 1000 if n is None else max(1, min(1000, n - shown))
                r = await c.get_records(ShardIterator=it, Limit=limit)
                its[i] = r["NextShardIterator"]
                for rec in r["Records"]:
                    sys.stdout.buffer.write(render(rec["Data"], schemas) + b"\n")
                    shown += 1
                if n is not None and shown >= n:
                    break
            sys.stdout.flush()
            await asyncio.sleep(0.5)
    return 0


def tail(
    url: str,
    bootstrap: str | None,
    endpoint: str | None,
    n: int | None,
    beginning: bool,
    schemas: Iterable[EventSchema] = (),
) -> int:
    """``schemas``: more than the shipped ones (a scenario's streams')."""
    scheme, _, name = url.partition("://")
    local = read_local_endpoints()
    known = by_fingerprint(schemas)
    if scheme == "kafka" and name:
        addr = bootstrap or local.get("kafka") or f"127.0.0.1:{PREFERRED_PORTS['kafka']}"
        return asyncio.run(tail_kafka(name, addr, n, beginning, known))
    if scheme == "kinesis" and name:
        ep = endpoint or local.get("aws")
        return asyncio.run(tail_kinesis(name, ep, n, beginning, known))
    print(
        f"datafactory: tail needs kafka://TOPIC or kinesis://STREAM, got {url!r}", file=sys.stderr
    )
    return 2
