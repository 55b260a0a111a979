"""``stdout``: JSON lines (or an Avro object container stream) on standard output.

When the reader goes away (``datafactory run x.yaml | head``), the sink does what a pipe's
writer does: the run ends (SIGTERM to itself, so it drains and exits); what could not be
written is counted as failed, not retried."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Literal

import numpy as np
import structlog

from datafactory.config import SinkBase
from datafactory.encoders.base import EncodedBatch, PartialDeliveryError
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
        self._gone = False  # the reader closed the pipe

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
        if not len(batch):
            return
        if not self._gone:
            try:
                await asyncio.to_thread(self._write, batch)
                return
            except BrokenPipeError:
                self._gone = True
                structlog.get_logger("datafactory.sinks").warning("stdout_closed", sink=self.name)
                os.kill(os.getpid(), signal.SIGTERM)  # the run ends, as a pipe's writer does
        everything = np.ones(len(batch), dtype=np.bool_)
        raise PartialDeliveryError(everything, "standard output is closed", everything)

    async def close(self) -> None:
        if not self._gone:
            try:
                await asyncio.to_thread(sys.stdout.flush)
            except BrokenPipeError:
                self._gone = True
