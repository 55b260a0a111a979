"""One suite every sink must pass (Benthos StreamTests): open/close, send batches, order per
key, reconnect without loss, close flushes. Each sink runs against its real endpoint."""

from __future__ import annotations

import io
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from datafactory.encoders import build_encoder
from datafactory.encoders.base import EncodedBatch
from datafactory.engine.seeding import SeedTree
from datafactory.lifecycle.local import Moto, Tansu
from datafactory.pack import registered_sinks
from datafactory.runtime.drive import uniform_times
from datafactory.sinks.base import NotConnectedError, Sink, SinkContext
from datafactory_retail import RetailPack, RetailParams
from tests.integration.conftest import consume

pytestmark = pytest.mark.integration
STREAM = "retail.pos_transaction"
_names = itertools.count()


@dataclass
class Harness:
    sink: Sink
    read_back: Callable[[int], Awaitable[list[tuple[int, int]]]]  # -> [(key, seq)] in order


def _seq_of(value: bytes, fmt: str) -> int:
    if fmt == "json":
        return int(orjson.loads(value)["transaction_id"]) - 1_000_000_001
    from fastavro import schemaless_reader

    schema = RetailPack.schema_for("pos_transaction")
    body = value[10:] if value[:2] == b"\xc3\x01" else value
    rec = schemaless_reader(io.BytesIO(body), schema.parsed, None)
    return int(rec["transaction_id"]) - 1_000_000_001


def _key_of_seq(seq: int) -> int:
    return KEYS[seq]


async def file_harness(tmp: Path, fmt: str, **_: Any) -> Harness:
    cfg = registered_sinks()["file"].Config.model_validate(
        {"type": "file", "path": str(tmp), "format": fmt, "max_bytes": "64KiB"}
    )
    sink = registered_sinks()["file"]("f", cfg, SinkContext(f"conf{next(_names)}", 1))

    async def read(_: int) -> list[tuple[int, int]]:
        out = []
        files = sorted((tmp / "retail" / "pos_transaction").iterdir())
        for f in files:
            if fmt == "json":
                seqs = [_seq_of(x, fmt) for x in f.read_bytes().splitlines()]
            else:
                import fastavro

                with f.open("rb") as fh:
                    seqs = [int(r["transaction_id"]) - 1_000_000_001 for r in fastavro.reader(fh)]
            out += [(_key_of_seq(s), s) for s in seqs]
        return out

    return Harness(sink, read)


async def kafka_harness(tmp: Path, fmt: str, tansu: Tansu, **_: Any) -> Harness:
    topic = f"conformance.{fmt}.{next(_names)}"
    cfg = registered_sinks()["kafka"].Config.model_validate(
        {"type": "kafka", "bootstrap": tansu.bootstrap, "format": fmt, "topic": topic}
    )
    sink = registered_sinks()["kafka"]("k", cfg, SinkContext("conf", 1))
    await sink.provision([STREAM])

    async def read(expect: int) -> list[tuple[int, int]]:
        msgs = await consume(tansu.bootstrap, topic, expect)
        return [(int(m.key), _seq_of(m.value, fmt)) for m in msgs]

    return Harness(sink, read)


async def kinesis_harness(tmp: Path, fmt: str, moto: Moto, **_: Any) -> Harness:
    name = f"conformance-{fmt}-{next(_names)}"
    cfg = registered_sinks()["aws_kinesis"].Config.model_validate(
        {
            "type": "aws_kinesis",
            "endpoint_url": moto.endpoint,
            "format": fmt,
            "stream": name,
            "shards": 2,
            "max_in_flight": 1,
        }
    )
    sink = registered_sinks()["aws_kinesis"]("kin", cfg, SinkContext("conf", 1))
    sink.use_local(moto.endpoint)
    await sink.provision([STREAM])

    async def read(_: int) -> list[tuple[int, int]]:
        from tests.integration.test_kinesis import read_stream

        recs = await read_stream(moto.endpoint, name)
        return [(int(r["PartitionKey"]), _seq_of(r["Data"], fmt)) for r in recs]

    return Harness(sink, read)


async def s3_harness(tmp: Path, fmt: str, moto: Moto, **_: Any) -> Harness:
    bucket = f"conformance-{fmt}-{next(_names)}"
    cfg = registered_sinks()["aws_s3"].Config.model_validate(
        {
            "type": "aws_s3",
            "endpoint_url": moto.endpoint,
            "format": fmt,
            "bucket": bucket,
            "prefix": "raw/",
        }
    )
    sink = registered_sinks()["aws_s3"]("s3", cfg, SinkContext("conf", 1))
    sink.use_local(moto.endpoint)
    await sink.provision([STREAM])

    async def read(_: int) -> list[tuple[int, int]]:
        import aiobotocore.session
        import fastavro

        out = []
        async with aiobotocore.session.get_session().create_client(
            "s3",
            endpoint_url=moto.endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        ) as c:
            listing = await c.list_objects_v2(Bucket=bucket, Prefix="raw/retail/pos_transaction/")
            # keys carry the first seq zero-padded: key order is write order
            for obj in sorted(listing.get("Contents", []), key=lambda o: o["Key"].split("/")[-1]):
                body = await (await c.get_object(Bucket=bucket, Key=obj["Key"]))["Body"].read()
                if fmt == "json":
                    seqs = [_seq_of(x, fmt) for x in body.splitlines()]
                else:
                    seqs = [
                        int(r["transaction_id"]) - 1_000_000_001
                        for r in fastavro.reader(io.BytesIO(body))
                    ]
                out += [(_key_of_seq(s), s) for s in seqs]
        return out

    return Harness(sink, read)


HARNESSES = {
    "file": file_harness,
    "kafka": kafka_harness,
    "aws_kinesis": kinesis_harness,
    "aws_s3": s3_harness,
}
N = 3000
_pack = RetailPack(RetailParams(stores=7, skus=100, customers=100), SeedTree(2))
BLOCK = _pack.stream("pos_transaction").generate(
    0, uniform_times(N, 1_767_225_600_000_000, 1_767_229_200_000_000)
)
KEYS = BLOCK.key.tolist()


def batches(fmt: str, message: bool, start: int, stop: int, size: int = 500) -> list[EncodedBatch]:
    enc = build_encoder(fmt, _pack.schema_for("pos_transaction"), 1, single_object=message)
    return [enc.encode(BLOCK.take(slice(i, min(i + size, stop)))) for i in range(start, stop, size)]


@pytest.fixture(
    params=[(k, f) for k in HARNESSES for f in ("json", "avro")], ids=lambda p: f"{p[0]}-{p[1]}"
)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    kind, fmt = request.param
    services: dict[str, Any] = {}
    if kind == "kafka":
        services["tansu"] = request.getfixturevalue("tansu")
    if kind in ("aws_kinesis", "aws_s3"):
        services["moto"] = request.getfixturevalue("moto")
    h = await HARNESSES[kind](tmp_path, fmt, **services)
    yield h, fmt
    await h.sink.close()
    await h.sink.teardown()


async def test_open_and_close_without_writing(harness: Any) -> None:
    h, _ = harness
    await h.sink.connect()
    assert await h.sink.healthcheck()
    await h.sink.close()
    await h.sink.close()  # closing twice is harmless


async def test_batches_arrive_exactly_once_in_key_order(harness: Any) -> None:
    h, fmt = harness
    await h.sink.connect()
    for b in batches(fmt, h.sink.message_oriented, 0, N):
        await h.sink.write_batch(b)
    await h.sink.close()  # close flushes
    got = await h.read_back(N)
    assert sorted(s for _, s in got) == list(range(N))
    per_key: dict[int, list[int]] = defaultdict(list)
    for key, seq in got:
        assert key == KEYS[seq]
        per_key[key].append(seq)
    assert all(v == sorted(v) for v in per_key.values())


async def test_reconnect_without_loss(harness: Any) -> None:
    h, fmt = harness
    bs = batches(fmt, h.sink.message_oriented, 0, N)
    await h.sink.connect()
    for b in bs[:3]:
        await h.sink.write_batch(b)
    await h.sink.close()  # the connection is gone
    if h.sink.message_oriented:
        with pytest.raises(NotConnectedError):
            await h.sink.write_batch(bs[3])
    await h.sink.connect()  # what the engine does on NotConnectedError
    for b in bs[3:]:
        await h.sink.write_batch(b)
    await h.sink.close()
    got = await h.read_back(N)
    assert sorted(s for _, s in got) == list(range(N))


async def test_a_subset_batch_sends_only_its_records(harness: Any) -> None:
    h, fmt = harness
    (b,) = batches(fmt, h.sink.message_oriented, 0, 200, size=200)
    keep = np.zeros(200, dtype=np.bool_)
    keep[::7] = True
    await h.sink.connect()
    await h.sink.write_batch(b.subset(keep))
    await h.sink.close()
    got = await h.read_back(int(keep.sum()))
    assert sorted(s for _, s in got) == list(range(0, 200, 7))
