"""``aws_kinesis``: PutRecords through aiobotocore, within every Kinesis limit.

* at most 500 records and 5 MiB (data + partition keys) per call, 1 MiB per record;
* a record that can never fit is written to a side output (JSON lines, with the reason) and
  counted as failed at once -- it is never retried;
* a partial failure (``ProvisionedThroughputExceededException``, ``InternalFailure``) marks
  only the failed entries; the engine resends just those, with capped, jittered backoff;
* optionally a token bucket per shard (1,000 records/s and 1 MiB/s by default) keeps the
  producer under the shard limits instead of provoking throttling;
* one client for the life of the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import orjson
from pydantic import Field

from datafactory.config import SinkBase
from datafactory.encoders.base import EncodedBatch, PartialDeliveryError
from datafactory.engine.clock import WallClock
from datafactory.engine.rate import ConstantProfile, TokenBucket
from datafactory.sinks.aws import AwsConfig, AwsSink
from datafactory.sinks.base import NotConnectedError, SinkContext

MAX_RECORDS = 500
MAX_CALL_BYTES = 5 * 2**20
MAX_RECORD_BYTES = 2**20


class KinesisConfig(AwsConfig):
    type: Literal["aws_kinesis"] = "aws_kinesis"
    stream: str = Field(
        "{pack}-{stream}",
        min_length=1,
        description="stream name template ({pack}, {stream}, {run})",
    )
    shards: int = Field(1, ge=1, le=10_000, description="shards of streams we create")
    max_in_flight: int = Field(4, ge=1, le=64, description="engine batches outstanding at once")
    shard_rate_limit: bool = Field(False, description="meter each shard below its limits")
    shard_records_per_s: int = Field(1000, ge=1, description="per-shard record budget")
    shard_bytes_per_s: int = Field(2**20, ge=1, description="per-shard byte budget")
    rejects_path: str = Field(
        "./data/rejects", description="folder of the side output for records that cannot fit"
    )


def _shard_of(hash_keys: np.ndarray[Any, Any], starts: list[int]) -> np.ndarray[Any, Any]:
    return np.searchsorted(np.array(starts, dtype=object), hash_keys, side="right") - 1


class KinesisSink(AwsSink):
    Config: ClassVar[type[SinkBase]] = KinesisConfig
    service = "kinesis"
    message_oriented: ClassVar[bool] = True

    max_record_bytes = MAX_RECORD_BYTES

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        assert isinstance(config, KinesisConfig)
        self.cfg = config
        self.max_in_flight = config.max_in_flight
        self.rejected = 0
        self._shards: dict[str, list[tuple[int, str]]] = {}  # stream -> (start hash, shard id)
        self._buckets: dict[tuple[str, str], tuple[TokenBucket, TokenBucket]] = {}

    def stream_for(self, stream: str) -> str:
        pack, _, name = stream.partition(".")
        return self.cfg.stream.format(pack=pack, stream=name, run=self.ctx.run_name)

    async def provision(self, streams: list[str]) -> None:
        client = await self._ensure_client()
        for s in streams:
            name = self.stream_for(s)
            # ask for the stream by name: ListStreams pages (10 names a page on moto)
            try:
                await client.describe_stream_summary(StreamName=name)
            except client.exceptions.ResourceNotFoundException:
                await client.create_stream(StreamName=name, ShardCount=self.cfg.shards)
                self.created.append(name)
            await client.get_waiter("stream_exists").wait(
                StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
            )
            with contextlib.suppress(Exception):  # tags are nice to have, not required
                await client.add_tags_to_stream(
                    StreamName=name, Tags={"datafactory-run": self.ctx.run_name}
                )

    async def delete_resources(self, names: list[str]) -> None:
        client = await self._ensure_client()
        for name in names:
            with contextlib.suppress(client.exceptions.ResourceNotFoundException):
                await client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)

    async def _shard_map(self, name: str) -> list[tuple[int, str]]:
        m = self._shards.get(name)
        if m is None:
            client = await self._ensure_client()
            shards = (await client.list_shards(StreamName=name))["Shards"]
            open_ = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
            m = sorted((int(s["HashKeyRange"]["StartingHashKey"]), s["ShardId"]) for s in open_)
            self._shards[name] = m
        return m

    async def _meter(self, name: str, pks: list[str], sizes: list[int]) -> None:
        """Wait until every shard this call touches has budget for it."""
        shards = await self._shard_map(name)
        starts = [s for s, _ in shards]
        keys = np.array(
            [int.from_bytes(hashlib.md5(k.encode()).digest(), "big") for k in pks], dtype=object
        )
        owner = _shard_of(keys, starts)
        for j in np.unique(owner).tolist():
            sel = owner == j
            n, nbytes = int(sel.sum()), int(np.asarray(sizes)[sel].sum())
            key = (name, shards[j][1])
            if key not in self._buckets:
                clock = WallClock()
                self._buckets[key] = (
                    TokenBucket(ConstantProfile(base=self.cfg.shard_records_per_s), clock, burst=1),
                    TokenBucket(ConstantProfile(base=self.cfg.shard_bytes_per_s), clock, burst=1),
                )
            for bucket, amount in zip(self._buckets[key], (n, nbytes), strict=True):
                wait = bucket.acquire(amount)
                while wait > 0:  # the bucket answers with a wait; it never sleeps itself
                    await asyncio.sleep(wait)
                    wait = bucket.acquire(amount)

    def _reject(self, batch: EncodedBatch, rows: list[int], sizes: list[int]) -> None:
        folder = Path(self.cfg.rejects_path)
        folder.mkdir(parents=True, exist_ok=True)
        seqs = batch.seqs()
        with open(folder / f"{self.name}.jsonl", "ab") as fh:
            for i in rows:
                fh.write(
                    orjson.dumps(
                        {
                            "sink": self.name,
                            "stream": batch.stream,
                            "seq": int(seqs[i]),
                            "bytes": sizes[i],
                            "reason": f"record of {sizes[i]} bytes (with its "
                            f"partition key) exceeds the Kinesis limit of {MAX_RECORD_BYTES}",
                        }
                    )
                    + b"\n"
                )
        self.rejected += len(rows)

    async def write_batch(self, batch: EncodedBatch) -> None:
        if self._client is None:
            raise NotConnectedError(f"sink {self.name}: not connected")
        name = self.stream_for(batch.stream)
        values = batch.records()
        pks = [str(k) for k in batch.keys().tolist()]
        sizes = [len(v) + len(pk) for v, pk in zip(values, pks, strict=True)]
        n = len(values)
        failed = np.zeros(n, dtype=np.bool_)
        permanent = np.zeros(n, dtype=np.bool_)
        too_big = [i for i in range(n) if sizes[i] > MAX_RECORD_BYTES]
        if too_big:
            await asyncio.to_thread(self._reject, batch, too_big, sizes)
            failed[too_big] = permanent[too_big] = True
        errors: set[str] = set()
        chunk: list[int] = []
        chunk_bytes = 0
        for i in [i for i in range(n) if not permanent[i]] + [-1]:
            if i >= 0 and len(chunk) < MAX_RECORDS and chunk_bytes + sizes[i] <= MAX_CALL_BYTES:
                chunk.append(i)
                chunk_bytes += sizes[i]
                continue
            if chunk:
                await self._put(name, chunk, values, pks, sizes, failed, errors)
            chunk, chunk_bytes = ([i], sizes[i]) if i >= 0 else ([], 0)
        if failed.any():
            raise PartialDeliveryError(
                failed, "; ".join(sorted(errors)[:3]) or "rejected", permanent=permanent
            )

    async def _put(
        self,
        name: str,
        chunk: list[int],
        values: list[memoryview],
        pks: list[str],
        sizes: list[int],
        failed: np.ndarray[Any, Any],
        errors: set[str],
    ) -> None:
        if self.cfg.shard_rate_limit:
            await self._meter(name, [pks[i] for i in chunk], [sizes[i] for i in chunk])
        records = [{"Data": bytes(values[i]), "PartitionKey": pks[i]} for i in chunk]
        try:
            resp = await self._client.put_records(StreamName=name, Records=records)
        except Exception as e:  # the whole call failed: all of its entries are to resend
            failed[chunk] = True
            errors.add(type(e).__name__)
            return
        if resp.get("FailedRecordCount", 0):
            for i, entry in zip(chunk, resp["Records"], strict=True):
                if "ErrorCode" in entry:
                    failed[i] = True
                    errors.add(entry["ErrorCode"])
