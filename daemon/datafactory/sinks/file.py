"""``file``: JSON lines or Avro object container files in a local folder.

One folder per event type, deterministic names (``<run>-<index>.<ext>``), rotation by size
and by event-time span; every batch is flushed to the OS before it counts as written (a
killed process loses none), fsync on rotate and close (or per batch). Existing files are
never overwritten: a clash moves on to the next free index.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import Field

from datafactory.config import SinkBase
from datafactory.encoders.base import EncodedBatch
from datafactory.sinks import ocf
from datafactory.sinks.base import Sink, SinkContext
from datafactory.units import ByteSize, Duration


class FileConfig(SinkBase):
    type: Literal["file"] = "file"
    path: str = Field(
        "./data", min_length=1, description="folder to write into", examples=["./data"]
    )
    max_bytes: ByteSize = Field(
        128 * 2**20, gt=0, description="rotate a file once it is this big", examples=["64MiB"]
    )
    max_span: Duration | None = Field(
        None, gt=0, description="rotate once a file covers this much event time", examples=["1h"]
    )
    fsync: Literal["close", "batch"] = Field(
        "close", description="fsync on rotate/close only, or after every batch"
    )


@dataclass
class _Open:
    fh: BinaryIO
    path: Path
    index: int
    size: int = 0
    first_time_us: int | None = None
    sync: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


class FileSink(Sink):
    Config = FileConfig
    max_in_flight = 1

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        assert isinstance(config, FileConfig)
        self.cfg = config
        self.root = Path(config.path)
        self._open: dict[str, _Open] = {}
        self._next_index: dict[str, int] = {}
        self.files_written: list[Path] = []

    async def connect(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    def _ext(self) -> str:
        return "jsonl" if self.cfg.format == "json" else "avro"

    def _open_new(self, batch: EncodedBatch) -> _Open:
        folder = self.root / batch.stream.replace(".", "/")
        folder.mkdir(parents=True, exist_ok=True)
        index = self._next_index.get(batch.stream, 0)
        while True:
            path = folder / f"{self.ctx.label}-{index:06d}.{self._ext()}"
            try:
                fh = open(path, "xb")  # noqa: SIM115 - kept open across batches
                break
            except FileExistsError:
                index += 1
        self._next_index[batch.stream] = index + 1
        f = _Open(fh, path, index)
        if self.cfg.format == "avro":
            f.sync = ocf.sync_marker(self.ctx.run_seed, batch.stream, index)
            head = ocf.header(batch.schema, f.sync)
            fh.write(head)
            f.size += len(head)
        return f

    def _finish(self, f: _Open) -> None:
        f.fh.flush()
        os.fsync(f.fh.fileno())
        f.fh.close()
        self.files_written.append(f.path)

    def _write(self, batch: EncodedBatch) -> None:
        f = self._open.get(batch.stream)
        first_t = int(batch.block.event_time[batch.indices()[0]]) if len(batch) else None
        if f is not None and (
            f.size >= self.cfg.max_bytes
            or (
                self.cfg.max_span is not None
                and f.first_time_us is not None
                and first_t is not None
                and first_t - f.first_time_us >= self.cfg.max_span * 1_000_000
            )
        ):
            self._finish(f)
            f = None
        if f is None:
            f = self._open[batch.stream] = self._open_new(batch)
        if f.first_time_us is None:
            f.first_time_us = first_t
        data = batch.contiguous()
        parts = ocf.block(len(batch), data, f.sync) if self.cfg.format == "avro" else [data]
        for p in parts:
            f.fh.write(p)
            f.size += len(p)
        f.fh.flush()  # in the OS before the batch counts as written: a killed process loses none
        if self.cfg.fsync == "batch":
            os.fsync(f.fh.fileno())

    async def write_batch(self, batch: EncodedBatch) -> None:
        if len(batch):
            await asyncio.to_thread(self._write, batch)

    async def close(self) -> None:
        opened, self._open = list(self._open.values()), {}
        for f in opened:
            await asyncio.to_thread(self._finish, f)
