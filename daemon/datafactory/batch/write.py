"""A shard's day written as it is simulated, in memory bounded by row groups.

Blocks come in seq order per stream; each goes to the open file of its (stream, Hive
partition), opened at its first row (and named by that row's seq). A file buffers its rows
until it has a row group's worth, then that row group is encoded and its bytes handed to the
target at once (a temp file locally; an S3 part as each fills). A file closes when it holds
``file_rows`` rows, when the simulation has passed the end of its partition (hourly
partitions), or at the end of the day: a huge day is many files.

Encoding runs in a worker thread, one row group at a time, while the event loop's thread
goes on simulating the next rows (pyarrow and the compressors release the GIL): the batch
is bound by the slower of the two, not by their sum.

Every cut is made at row counts and simulated times, never at wall-clock ones, so the same
config and seed give the same files with the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from datafactory.batch.output import (
    CONTENT_TYPE,
    Body,
    FileFormat,
    FileInfo,
    file_key,
    partition_of,
    partition_unit,
    split_files,
)
from datafactory.batch.targets import Upload
from datafactory.engine.blocks import RecordBlock


@dataclass
class OpenFile:
    key: str
    stream: str
    slot: tuple[str, int]  # (stream, partition start)
    end_us: int  # its partition's end
    body: Body
    upload: Upload
    first_seq: int
    rows: int = 0  # handed to the encoder
    last_seq: int = 0
    nbytes: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    buffered: list[RecordBlock] = field(default_factory=list)
    n_buffered: int = 0
    ended: bool = False


class DayWriter:
    def __init__(
        self,
        target: Any,
        formats: dict[str, FileFormat],
        shard: int,
        partition: str,
        file_rows: int,
        fmt: str,
    ) -> None:
        self.target, self.formats, self.shard = target, formats, shard
        self.partition, self.file_rows = partition, file_rows
        self.content_type = CONTENT_TYPE[fmt]
        self.open: dict[tuple[str, int], OpenFile] = {}
        self.files: list[FileInfo] = []
        self.existing = 0  # files that were there already, identical (a rerun)
        self._busy: asyncio.Task[None] | None = None  # the row group being encoded

    async def add(self, block: RecordBlock) -> None:
        fmt = self.formats[block.stream]
        for start, rows in split_files(block, self.partition):
            f = self.open.get((block.stream, start))
            if f is None:
                first = int(rows.seq[0])
                part = partition_of(start, self.partition)
                key = file_key(block.stream, part, self.shard, first, fmt.ext)
                f = OpenFile(
                    key, block.stream, (block.stream, start),
                    start + partition_unit(self.partition),
                    fmt.body(block.stream, self.shard, first),
                    await self.target.create(key, self.content_type), first,
                )  # fmt: skip
                self.open[(block.stream, start)] = f
            f.buffered.append(rows)
            f.n_buffered += len(rows)
            await self._flush(f)

    async def passed(self, t_us: int) -> None:
        """The simulation is through ``t_us``: files of partitions that ended by then close
        (an event that comes later for one, a late one, opens a new file)."""
        for k, f in list(self.open.items()):
            if f.end_us <= t_us:
                await self._close(k)

    async def finish(self) -> list[FileInfo]:
        """Close every file; what the day wrote."""
        for k in sorted(self.open):
            await self._close(k)
        await self._wait()
        return self.files

    async def abort(self) -> None:
        if self._busy is not None:
            self._busy.cancel()
            await asyncio.gather(self._busy, return_exceptions=True)
        for f in self.open.values():
            await f.upload.abort()
        self.open.clear()

    # -- row groups ------------------------------------------------------------------------

    async def _flush(self, f: OpenFile, final: bool = False) -> None:
        """Hand full row groups (``final``: and what is left) to the encoder; at
        ``file_rows`` the file ends and the rest opens the partition's next one."""
        rg = self.formats[f.stream].row_group_rows
        while f.n_buffered and (
            f.n_buffered >= (room := min(rg, self.file_rows - f.rows)) or final
        ):
            take = min(room, f.n_buffered)
            group: list[RecordBlock] = []
            while take:
                b = f.buffered[0]
                if len(b) <= take:
                    group.append(f.buffered.pop(0))
                    take -= len(b)
                else:
                    group.append(b.take(slice(0, take)))
                    f.buffered[0] = b.take(slice(take, len(b)))
                    take = 0
            n = sum(len(b) for b in group)
            f.n_buffered -= n
            f.rows += n
            f.last_seq = int(group[-1].seq[-1])
            await self._submit(f, group)
            if f.rows >= self.file_rows:
                await self._end(f)
                if self.open.get(f.slot) is f:
                    del self.open[f.slot]
                rest, f.buffered, f.n_buffered = f.buffered, [], 0
                for b in rest:
                    await self.add(b)
                return

    async def _close(self, slot: tuple[str, int]) -> None:
        while (f := self.open.pop(slot, None)) is not None:
            await self._flush(f, final=True)  # (at file_rows, the rest reopens the slot)
            if not f.ended:
                await self._end(f)

    async def _end(self, f: OpenFile) -> None:
        f.ended = True
        await self._submit(f, None)

    async def _submit(self, f: OpenFile, group: list[RecordBlock] | None) -> None:
        """Encode a row group (None: the file's end): the Python part here, the rest in a
        worker thread that starts at once and runs while the caller simulates on."""
        await self._wait()  # one row group at a time: bounded memory, bytes in file order
        end = group is None
        prepared = f.body.prepare(group) if group is not None else None
        work = asyncio.get_running_loop().run_in_executor(None, self._encode, f, prepared, end)
        self._busy = asyncio.ensure_future(self._send(f, work, end))

    @staticmethod
    def _encode(f: OpenFile, prepared: Any, end: bool) -> bytes:
        data = f.body.end() if end else f.body.write(prepared)
        f.sha.update(data)
        f.nbytes += len(data)
        return data

    async def _wait(self) -> None:
        busy, self._busy = self._busy, None
        if busy is not None:
            await busy

    async def _send(self, f: OpenFile, work: asyncio.Future[bytes], end: bool) -> None:
        data = await work
        if data:
            await f.upload.write(data)
        if end:
            digest = f.sha.hexdigest()
            created = await f.upload.commit(digest)
            self.existing += not created
            self.files.append(
                FileInfo(f.key, f.stream, f.rows, f.nbytes, digest, f.first_seq, f.last_seq)
            )
