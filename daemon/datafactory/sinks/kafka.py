"""``kafka``: one message per event, through aiokafka's batch API.

Records are grouped by partition (a stable hash of the block's partition key), appended to
aiokafka batch builders (no per-record ``send()``), and sent with ``send_batch``; every batch
resolves or fails within ``delivery_timeout``. A failure of some partitions' batches is a
partial delivery: the engine resends only those records. Headers carry the event type, the
schema fingerprint, the run and the seq; the message timestamp is the event time.

Tansu (the local stand-in) rejects aiokafka's idempotent producer; ``idempotence: true``
fails at connect with a message saying so. The default is ``acks: all`` without it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from datafactory.config import SinkBase
from datafactory.encoders import fast
from datafactory.encoders.base import EncodedBatch, PartialDeliveryError
from datafactory.encoders.varint import zigzag_varint
from datafactory.engine.identity import splitmix64
from datafactory.sinks.base import NotConnectedError, ProvisionedConfig, Sink, SinkContext
from datafactory.units import ByteSize, Duration


class KafkaConfig(ProvisionedConfig):
    type: Literal["kafka"] = "kafka"
    provider: Literal["external", "local"] = Field(
        "external", description="local: start a Tansu broker for the run"
    )
    bootstrap: str | None = Field(
        None,
        description="host:port[,host:port]; required unless provider is local",
        examples=["127.0.0.1:9092"],
    )
    topic: str = Field(
        "{pack}.{stream}", min_length=1, description="topic name template ({pack}, {stream}, {run})"
    )
    partitions: int = Field(3, ge=1, le=10_000, description="partitions of topics we create")
    replication_factor: int = Field(1, ge=1, le=16, description="replicas of topics we create")
    topic_config: dict[str, str] = Field(default_factory=dict, description="configs of new topics")
    acks: Literal[0, 1, "all"] = Field("all", description="0, 1 or all")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    linger: Duration = Field(0.005, ge=0, le=10, description="producer linger")
    batch_bytes: ByteSize = Field(
        2**20, ge=1024, le=64 * 2**20, description="largest record batch per partition"
    )
    max_in_flight: int = Field(4, ge=1, le=64, description="engine batches outstanding at once")
    producers: int = Field(
        3,
        ge=1,
        le=16,
        description="producer connections; partition p always goes through producer p mod n "
        "(aiokafka keeps one request in flight per connection)",
    )
    delivery_timeout: Duration = Field(
        30.0, gt=0, description="a batch is acknowledged within this or counts as failed"
    )
    idempotence: bool = Field(False, description="idempotent producer (not supported by Tansu)")
    max_record_bytes: ByteSize = Field(
        1_000_000,
        ge=1024,
        description="the broker's message.max.bytes: bigger records fail for good, unsent",
    )
    fast_batches: bool = Field(
        True,
        description="build record batches in the compiled path (off: aiokafka's builder); "
        "never with idempotence",
    )

    @model_validator(mode="after")
    def _fits(self) -> KafkaConfig:
        if self.max_record_bytes > self.batch_bytes - 1024:
            raise ValueError("max_record_bytes must be at least 1 KiB below batch_bytes")
        return self


# Kafka record batch v2 header (as aiokafka's DefaultRecordBase.HEADER_STRUCT)
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_OFFSET, _ATTRIBUTES_OFFSET, _AFTER_LEN_OFFSET = 17, 21, 12
_CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def _encode_headers(headers: list[tuple[str, bytes]]) -> bytes:
    """Record headers in the v2 wire form (zigzag varint lengths)."""
    out = bytearray()
    for k, v in headers:
        kb = k.encode()
        out += zigzag_varint(len(kb)) + kb + zigzag_varint(len(v)) + v
    return bytes(out)


def build_record_batch(
    records: bytes, count: int, first_ts: int, max_ts: int, compression: str
) -> bytearray:
    """A complete v2 record batch around ``records`` (compressed when it pays), with CRC."""
    codec = _CODECS[compression]
    body = records
    if codec:
        from aiokafka import codec as kc

        encode = {1: kc.gzip_encode, 2: kc.snappy_encode, 3: kc.lz4_encode, 4: kc.zstd_encode}
        squeezed = encode[codec](records)
        if len(squeezed) < len(records):
            body = squeezed
        else:
            codec = 0
    buf = bytearray(_HEADER.size + len(body))
    _HEADER.pack_into(
        buf,
        0,
        0,
        len(buf) - _AFTER_LEN_OFFSET,
        -1,
        2,
        0,
        codec,
        count - 1,
        first_ts,
        max_ts,
        -1,
        -1,
        -1,
        count,
    )
    buf[_HEADER.size :] = body
    crc = fast.NATIVE.crc32c(memoryview(buf)[_ATTRIBUTES_OFFSET:])
    struct.pack_into(">I", buf, _CRC_OFFSET, crc)
    return buf


def _prebuilt_builder_class() -> Any:
    from aiokafka.producer.message_accumulator import BatchBuilder

    class PrebuiltBatch(BatchBuilder):  # type: ignore[misc]
        """A batch whose bytes we built already; aiokafka only ships it."""

        def __init__(self, buffer: bytearray, count: int) -> None:
            self._buffer = buffer
            self._relative_offset = count
            self._closed = True

        def append(self, **_: Any) -> None:
            return None

        def _build(self) -> bytearray:
            return self._buffer

        def size(self) -> int:
            return len(self._buffer)

    return PrebuiltBatch


class KafkaSink(Sink):
    Config: ClassVar[type[SinkBase]] = KafkaConfig
    message_oriented: ClassVar[bool] = True

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        assert isinstance(config, KafkaConfig)
        self.cfg = config
        self.max_in_flight = config.max_in_flight
        self.max_record_bytes = int(config.max_record_bytes)
        self.bootstrap = config.bootstrap
        self.producer: Any = None  # the first of `producers`, for metadata
        self.producers: list[Any] = []
        self._partitions: dict[str, int] = {}
        self._headers: dict[str, list[tuple[str, bytes]]] = {}
        self._wire_headers: dict[str, bytes] = {}
        self.fast = config.fast_batches and not config.idempotence and fast.NATIVE is not None
        self._prebuilt: Any = None
        self._tickets = 0
        self._turn = 0
        self._turns = asyncio.Condition()

    def topic_for(self, stream: str) -> str:
        pack, _, name = stream.partition(".")
        return self.cfg.topic.format(pack=pack, stream=name, run=self.ctx.run_name)

    def _producer_kwargs(self) -> dict[str, Any]:
        compression = None if self.cfg.compression == "none" else self.cfg.compression
        return {
            "bootstrap_servers": self.bootstrap,
            "acks": self.cfg.acks,
            "compression_type": compression,
            "linger_ms": int(self.cfg.linger * 1000),
            "max_batch_size": self.cfg.batch_bytes,
            "max_request_size": max(self.cfg.batch_bytes * 2, 2**20),
            "request_timeout_ms": int(self.cfg.delivery_timeout * 1000),
            "enable_idempotence": self.cfg.idempotence,
        }

    async def connect(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        if self.bootstrap is None:
            raise NotConnectedError(f"sink {self.name}: no bootstrap address")
        if self.producer is not None:
            return
        started: list[Any] = []
        try:
            for _ in range(self.cfg.producers):
                producer = AIOKafkaProducer(**self._producer_kwargs())
                started.append(producer)
                await producer.start()
        except KafkaError as e:
            for producer in started:
                await producer.stop()
            if self.cfg.idempotence:
                raise RuntimeError(
                    f"sink {self.name}: the broker refused the idempotent producer ({e!r}); "
                    "this broker (e.g. Tansu) does not support InitProducerId for aiokafka: "
                    "set idempotence: false (acks: all stays on)"
                ) from e
            raise NotConnectedError(f"sink {self.name}: {e!r}") from e
        self.producers = started
        self.producer = started[0]

    def local_service(self) -> str | None:
        return "kafka" if self.cfg.provider == "local" else None

    def use_local(self, address: str) -> None:
        self.bootstrap = address

    async def provision(self, streams: list[str]) -> None:
        """Create the run's topics (existing ones are left as they are)."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            todo = [self.topic_for(s) for s in streams if self.topic_for(s) not in existing]
            for topic in todo:
                try:
                    await admin.create_topics(
                        [
                            NewTopic(
                                topic,
                                self.cfg.partitions,
                                self.cfg.replication_factor,
                                topic_configs=dict(self.cfg.topic_config),
                            )
                        ]
                    )
                    self.created.append(topic)
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    async def delete_resources(self, names: list[str]) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            gone = [n for n in names if n in existing]
            if gone:
                await admin.delete_topics(gone)
        finally:
            await admin.close()

    def reconnect_config(self) -> dict[str, Any]:
        return {**self.cfg.model_dump(), "provider": "external", "bootstrap": self.bootstrap}

    async def _partition_count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            parts = await self.producer.partitions_for(topic)
            if not parts:
                raise NotConnectedError(f"sink {self.name}: topic {topic!r} has no partitions")
            n = self._partitions[topic] = len(parts)
        return n

    def _base_headers(self, batch: EncodedBatch) -> list[tuple[str, bytes]]:
        """The headers every record of this stream carries (all but ``seq``), built once."""
        h = self._headers.get(batch.stream)
        if h is None:
            h = self._headers[batch.stream] = [
                ("event_type", batch.stream.encode()),
                ("schema_fingerprint", batch.schema.fingerprint.hex().encode()),
                ("run", self.ctx.run_name.encode()),
                (
                    "content_type",
                    b"application/json"
                    if batch.format == "json"
                    else b"application/vnd.apache.avro+binary",
                ),
            ]
        return h

    # Engine batches are built concurrently (up to max_in_flight) but handed to the producer
    # strictly in the order write_batch was called, so records of one key stay in order.
    async def _wait_turn(self, ticket: int) -> None:
        async with self._turns:
            await self._turns.wait_for(lambda: self._turn >= ticket)

    async def _end_turn(self, ticket: int) -> None:
        await self._wait_turn(ticket)
        async with self._turns:
            if self._turn == ticket:
                self._turn += 1
            self._turns.notify_all()

    async def write_batch(self, batch: EncodedBatch) -> None:
        if self.producer is None:
            raise NotConnectedError(f"sink {self.name}: not connected")
        big = batch.sizes() > self.cfg.max_record_bytes
        if big.any():  # the broker would refuse them: send the rest, fail these for good
            rest = batch.subset(~big)
            if len(rest):
                await self.write_batch(rest)
            raise PartialDeliveryError(
                big,
                f"{int(big.sum())} records over max_record_bytes={self.cfg.max_record_bytes}",
                permanent=big,
            )
        ticket, self._tickets = self._tickets, self._tickets + 1
        try:
            sends = await self._submit(batch, ticket)
        finally:
            await self._end_turn(ticket)
        await self._await_acks(batch, sends)

    async def _submit(
        self, batch: EncodedBatch, ticket: int
    ) -> list[tuple[np.ndarray[Any, Any], Any]]:
        topic = self.topic_for(batch.stream)
        nparts = await self._partition_count(topic)
        keys = batch.keys()
        part = (splitmix64(keys.astype(np.uint64)) % np.uint64(nparts)).astype(np.int64)
        trim = batch.format == "json"  # a message is the JSON object without the newline
        base = self._base_headers(batch)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(nparts + 1))
        if self.fast:
            return await self._send_fast(batch, topic, order, bounds, base, trim, ticket)
        # fallback: aiokafka's own batch builder, record by record
        sends: list[tuple[np.ndarray[Any, Any], Any]] = []
        seqs = batch.seqs().tolist()
        times = (batch.block.event_time[batch.indices()] // 1000).tolist()
        key_list = keys.tolist()
        values = batch.records()
        await self._wait_turn(ticket)
        for p in range(nparts):
            idx = order[bounds[p] : bounds[p + 1]]
            start = 0
            rows = idx.tolist()
            while start < len(rows):
                builder = self.producer.create_batch()
                taken = 0
                for i in rows[start:]:
                    v = values[i]
                    meta = builder.append(
                        key=str(key_list[i]).encode(),
                        value=v[:-1] if trim else v,
                        timestamp=times[i],
                        headers=[*base, ("seq", str(seqs[i]).encode())],
                    )
                    if meta is None:
                        break
                    taken += 1
                if taken == 0:
                    raise ValueError(
                        f"a record of {len(values[rows[start]])} bytes does not fit "
                        f"batch_bytes={self.cfg.batch_bytes}"
                    )
                builder.close()
                producer = self.producers[p % len(self.producers)]
                fut = await producer.send_batch(builder, topic, partition=p)
                sends.append((idx[start : start + taken], fut))
                start += taken
        return sends

    async def _await_acks(
        self, batch: EncodedBatch, sends: list[tuple[np.ndarray[Any, Any], Any]]
    ) -> None:
        failed = np.zeros(len(batch), dtype=np.bool_)
        results = await asyncio.wait_for(
            asyncio.gather(*(f for _, f in sends), return_exceptions=True),
            self.cfg.delivery_timeout + 5,
        )
        errors = []
        for (idx, _), res in zip(sends, results, strict=True):
            if isinstance(res, BaseException):
                failed[idx] = True
                errors.append(repr(res))
        if failed.any():
            raise PartialDeliveryError(failed, "; ".join(sorted(set(errors))[:3]))

    def _build_fast(
        self,
        batch: EncodedBatch,
        order: np.ndarray[Any, Any],
        bounds: np.ndarray[Any, Any],
        base: list[tuple[str, bytes]],
        trim: bool,
    ) -> list[tuple[int, np.ndarray[Any, Any], bytearray, int]]:
        """(partition, positions, record batch, count) for every batch to send; runs in a
        worker thread (the C parts release the GIL)."""
        headers = self._wire_headers.get(batch.stream)
        if headers is None:  # the base headers in wire form, once per stream
            headers = self._wire_headers[batch.stream] = _encode_headers(base)
        rows_all = batch.indices().astype(np.int64)
        keys = np.ascontiguousarray(batch.block.key, dtype=np.int64)
        ts = np.ascontiguousarray(batch.block.event_time // 1000, dtype=np.int64)
        seqs = np.ascontiguousarray(batch.block.seq, dtype=np.int64)
        offsets = np.ascontiguousarray(batch.offsets, dtype=np.int64)
        out = []
        for p in range(len(bounds) - 1):
            idx = order[bounds[p] : bounds[p + 1]]
            start = 0
            while start < len(idx):
                rows = np.ascontiguousarray(rows_all[idx[start:]])
                records, count, first, last = fast.NATIVE.kafka_records(
                    batch.payload,
                    offsets,
                    rows,
                    keys,
                    ts,
                    seqs,
                    headers,
                    len(base),
                    int(trim),
                    self.cfg.batch_bytes - _HEADER.size,
                )
                buf = build_record_batch(records, count, first, last, self.cfg.compression)
                out.append((p, idx[start : start + count], buf, count))
                start += count
        return out

    async def _send_fast(
        self,
        batch: EncodedBatch,
        topic: str,
        order: np.ndarray[Any, Any],
        bounds: np.ndarray[Any, Any],
        base: list[tuple[str, bytes]],
        trim: bool,
        ticket: int,
    ) -> list[tuple[np.ndarray[Any, Any], Any]]:
        """Record batches built in C straight from the encoded payload; aiokafka ships them."""
        if self._prebuilt is None:
            self._prebuilt = _prebuilt_builder_class()
        built = await asyncio.to_thread(self._build_fast, batch, order, bounds, base, trim)
        await self._wait_turn(ticket)
        sends = []
        for p, positions, buf, count in built:
            producer = self.producers[p % len(self.producers)]
            fut = await producer.send_batch(self._prebuilt(buf, count), topic, partition=p)
            sends.append((positions, fut))
        return sends

    async def close(self) -> None:
        producers, self.producers, self.producer = self.producers, [], None
        for producer in producers:
            await producer.stop()

    async def healthcheck(self) -> bool:
        return self.producer is not None
