"""``aws_s3``: stream mode to S3 — each engine batch becomes one object.

Objects are JSON lines (or Avro object container files) named deterministically from the run,
the event type and the batch's seq range, under a Hive-style date/hour prefix of the batch's
first event time::

    {prefix}{pack}/{stream}/dt=2026-11-25/hour=14/{run}-{first seq:012d}-{last seq:012d}.jsonl

A rewrite of the same batch (a retry) lands on the same key, so retries never duplicate data.
The lifecycle manager creates the bucket (tagged with the run) and, for ``ephemeral: true``,
empties and deletes it when the run ends. History backfills with multipart uploads and
Parquet are batch mode's job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import ClassVar, Literal

from pydantic import Field

from datafactory.config import SinkBase
from datafactory.encoders.base import EncodedBatch
from datafactory.sinks import ocf
from datafactory.sinks.aws import AwsConfig, AwsSink, bucket_args
from datafactory.sinks.base import NotConnectedError, SinkContext


class S3Config(AwsConfig):
    type: Literal["aws_s3"] = "aws_s3"
    bucket: str = Field(
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="bucket name",
        examples=["datafactory-events"],
    )
    prefix: str = Field("", description="key prefix, e.g. raw/")
    max_in_flight: int = Field(4, ge=1, le=64, description="uploads outstanding at once")


class S3Sink(AwsSink):
    Config: ClassVar[type[SinkBase]] = S3Config
    service = "s3"

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        assert isinstance(config, S3Config)
        self.cfg = config
        self.max_in_flight = config.max_in_flight

    async def provision(self, streams: list[str]) -> None:
        client = await self._ensure_client()
        existing = {b["Name"] for b in (await client.list_buckets()).get("Buckets", [])}
        if self.cfg.bucket not in existing:
            await client.create_bucket(**bucket_args(self.cfg.bucket, self.cfg.region))
            self.created.append(self.cfg.bucket)
            with contextlib.suppress(Exception):  # tags are nice to have, not required
                await client.put_bucket_tagging(
                    Bucket=self.cfg.bucket,
                    Tagging={"TagSet": [{"Key": "datafactory-run", "Value": self.ctx.run_name}]},
                )

    async def delete_resources(self, names: list[str]) -> None:
        """Empty and delete these buckets."""
        client = await self._ensure_client()
        existing = {b["Name"] for b in (await client.list_buckets()).get("Buckets", [])}
        for bucket in [n for n in names if n in existing]:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    await client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            await client.delete_bucket(Bucket=bucket)

    def key_for(self, batch: EncodedBatch) -> str:
        seqs = batch.seqs()
        first_us = int(batch.block.event_time[batch.indices()[0]])
        when = dt.datetime.fromtimestamp(first_us / 1_000_000, dt.UTC)
        pack, _, stream = batch.stream.partition(".")
        ext = "jsonl" if batch.format == "json" else "avro"
        return (
            f"{self.cfg.prefix}{pack}/{stream}/dt={when:%Y-%m-%d}/hour={when:%H}/"
            f"{self.ctx.run_name}-{int(seqs[0]):012d}-{int(seqs[-1]):012d}.{ext}"
        )

    async def write_batch(self, batch: EncodedBatch) -> None:
        if self._client is None:
            raise NotConnectedError(f"sink {self.name}: not connected")
        if not len(batch):
            return
        data = batch.contiguous()
        if batch.format == "avro":  # a self-contained Avro object container per object
            sync = ocf.sync_marker(self.ctx.run_seed, batch.stream, int(batch.seqs()[0]))
            body: bytes | memoryview = b"".join(
                [ocf.header(batch.schema, sync), *ocf.block(len(batch), data, sync)]
            )
            ctype = "application/avro"
        else:
            body, ctype = data, "application/x-ndjson"
        await self._client.put_object(
            Bucket=self.cfg.bucket, Key=self.key_for(batch), Body=bytes(body), ContentType=ctype
        )

    async def put_object(self, key: str, body: bytes, content_type: str | None = None) -> None:
        """One object as is (the chaos manifest's Parquet parts)."""
        if self._client is None:
            raise NotConnectedError(f"sink {self.name}: not connected")
        extra = {"ContentType": content_type} if content_type else {}
        await self._client.put_object(Bucket=self.cfg.bucket, Key=key, Body=body, **extra)
