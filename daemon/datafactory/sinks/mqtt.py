"""``mqtt``: one message per record to an MQTT broker (aiomqtt), on templated topics.

The topic template takes ``{pack}``, ``{stream}``, ``{run}`` and any top-level field of the
record (``site/{site_id}/device/{device_id}/telemetry``); every placeholder is checked against
each stream's schema before the first event. JSON messages are the object without its
newline; Avro messages use the single-object encoding. QoS 1 and 2 wait for the broker's
acknowledgement before a batch counts as delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from datafactory.config import SinkBase
from datafactory.encoders.base import EncodedBatch
from datafactory.engine.blocks import column_to_list
from datafactory.sinks.base import NotConnectedError, Sink, SinkContext

FIXED = ("pack", "stream", "run")


class MqttConfig(SinkBase):
    type: Literal["mqtt"] = "mqtt"
    host: str = Field("127.0.0.1", min_length=1, description="broker host")
    port: int = Field(1883, ge=1, le=65_535, description="broker port")
    topic: str = Field(
        "{pack}/{stream}",
        min_length=1,
        description="topic template: {pack}, {stream}, {run} and record fields",
        examples=["site/{site_id}/device/{device_id}/{stream}"],
    )
    qos: Literal[0, 1, 2] = Field(1, description="MQTT quality of service")
    retain: bool = Field(False, description="retain each message on its topic")
    client_id: str | None = Field(None, description="default: datafactory-<run>-<sink>")
    username: str | None = None
    password: str | None = None
    keepalive: int = Field(60, ge=5, le=3600, description="seconds")
    max_inflight: int = Field(
        256, ge=1, le=65_535, description="QoS 1/2 messages awaiting acknowledgement"
    )

    @model_validator(mode="after")
    def _disk_needs_fixed_topics(self) -> MqttConfig:
        fields = [f for _, f, _, _ in string.Formatter().parse(self.topic) if f]
        records = [f for f in fields if f not in FIXED]
        if self.buffer.type == "disk" and records:
            raise ValueError(
                f"buffer.type disk keeps encoded records only, and topic {self.topic!r} takes "
                f"{', '.join(records)} from each record: use a memory buffer, or a topic of "
                f"{', '.join('{' + f + '}' for f in FIXED)} only"
            )
        return self


class MqttSink(Sink):
    Config = MqttConfig
    max_in_flight = 1
    message_oriented: ClassVar[bool] = True

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        assert isinstance(config, MqttConfig)
        self.cfg = config
        self.parts = list(string.Formatter().parse(config.topic))
        self.fields = [f for _, f, _, _ in self.parts if f is not None]
        for _, f, spec, conv in self.parts:
            if f is not None and (not f or spec or conv):
                raise ValueError(
                    f"sink {name!r}: topic {config.topic!r}: placeholders are plain names "
                    "like {site_id}"
                )
        self.client: Any = None

    async def provision(self, streams: list[str]) -> None:
        """Check the topic template against every stream's fields (nothing to create)."""
        from datafactory.schema import load_schema

        for s in streams:
            names = {f["name"] for f in load_schema(s).fields}
            missing = [f for f in self.fields if f not in FIXED and f not in names]
            if missing:
                raise ValueError(
                    f"topic {self.cfg.topic!r}: {', '.join(missing)} is not a field of {s} "
                    f"(fields: {', '.join(sorted(names))}; or {', '.join(FIXED)})"
                )

    async def connect(self) -> None:
        import aiomqtt

        cfg = self.cfg
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id or f"datafactory-{self.ctx.label}-{self.name}",
            username=cfg.username,
            password=cfg.password,
            keepalive=cfg.keepalive,
            max_inflight_messages=cfg.max_inflight,
            timeout=10,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as e:
            raise NotConnectedError(f"sink {self.name}: {cfg.host}:{cfg.port}: {e}") from e
        self.client = client

    def topics(self, batch: EncodedBatch) -> list[str]:
        """The topic of each record of the batch (its selected rows)."""
        rows = batch.indices().tolist()
        pack, _, stream = batch.stream.partition(".")
        fixed = {"pack": pack, "stream": stream, "run": self.ctx.run_name}
        values: dict[str, list[Any]] = {}
        for f in self.fields:
            if f not in fixed:
                col = column_to_list(batch.block.columns[f])
                values[f] = [col[r] for r in rows]
        out = []
        for i in range(len(rows)):
            topic: list[str] = []
            for literal, name, _, _ in self.parts:
                topic.append(literal)
                if name is not None:
                    topic.append(str(fixed[name] if name in fixed else values[name][i]))
            out.append("".join(topic))
        return out

    async def write_batch(self, batch: EncodedBatch) -> None:
        import aiomqtt

        if self.client is None:
            raise NotConnectedError(f"sink {self.name}: not connected")
        if not len(batch):
            return
        cfg = self.cfg
        trim = batch.format == "json"  # a message is the JSON object without its newline
        payloads = [bytes(r[:-1]) if trim else bytes(r) for r in batch.records()]
        topics = self.topics(batch)
        step = cfg.max_inflight  # no more outstanding than the broker lets us have in flight
        try:
            for i in range(0, len(payloads), step):
                await asyncio.gather(
                    *(
                        self.client.publish(t, p, qos=cfg.qos, retain=cfg.retain)
                        for t, p in zip(topics[i : i + step], payloads[i : i + step], strict=True)
                    )
                )
        except aiomqtt.MqttError as e:
            self.client = None
            raise NotConnectedError(f"sink {self.name}: {e}") from e

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):  # already gone: nothing left to flush
                await client.__aexit__(None, None, None)

    async def healthcheck(self) -> bool:
        return self.client is not None
