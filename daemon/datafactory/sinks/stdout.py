"""``stdout``: JSON lines (or an Avro object container stream) on standard output."""

from __future__ import annotations

import asyncio
import sys
from typing import Literal

from datafactory.config import SinkBase
from datafactory.encoders.base import EncodedBatch
from datafactory.sinks import ocf
from datafactory.sinks.base import Sink, SinkContext


class StdoutConfig(SinkBase):
    type: Literal["stdout"] = "stdout"


class StdoutSink(Sink):
    Config = StdoutConfig
    max_in_flight = 1

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        self._headers: dict[str, bytes] = {}

    async def connect(self) -> None:
        return None

    def _write(self, batch: EncodedBatch) -> None:
        out = sys.stdout.buffer
        data = batch.contiguous()
        if self.config.format == "avro":
            sync = self._headers.get(batch.stream)
            if sync is None:
                sync = self._headers[batch.stream] = ocf.sync_marker(
                    self.ctx.run_seed, batch.stream
                )
                out.write(ocf.header(batch.schema, sync))
            for p in ocf.block(len(batch), data, sync):
                out.write(p)
        else:
            out.write(data)
        out.flush()

    async def write_batch(self, batch: EncodedBatch) -> None:
        if len(batch):
            await asyncio.to_thread(self._write, batch)

    async def close(self) -> None:
        await asyncio.to_thread(sys.stdout.flush)
