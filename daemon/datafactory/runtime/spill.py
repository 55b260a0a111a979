"""The on-disk part of a ``type: disk`` sink buffer: encoded slices a lagging sink writes later.

A disk buffer holds ``max_events`` in memory like any other buffer; a slice that does not fit
there goes to disk (bounded by ``max_bytes``), and every slice after it follows it there until
the disk part is empty again, so the sink still writes in release order. A slice is written
encoded (chaos already rendered), one file per slice, fsynced before it is renamed into place:
once on disk it counts as done for the checkpoint mark, and a restart does not make it again:
the sink drains the files first.

A file is an uncompressed ``np.savez`` archive of plain arrays (the record bytes, their
offsets, the seqs, keys and event times, and a small JSON header), read back with
``allow_pickle=False``: nothing in it can run code. A file that cannot be read is moved aside
(``*.bad``) with an error, never deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import structlog

from datafactory.encoders.base import EncodedBatch
from datafactory.engine.blocks import RecordBlock
from datafactory.schema import EventSchema

log = structlog.get_logger("datafactory.spill")

VERSION = 1
_NAME = re.compile(r"^(\d{12})\.npz$")


@dataclass(frozen=True, slots=True)
class Segment:
    """One spilled slice."""

    no: int
    path: Path
    stream: str
    format: str
    events: int
    nbytes: int
    written_at: float  # wall-clock time it was spilled


def safe_name(name: str) -> str:
    """A run or sink name as one folder name (no separators, no dot-dot)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80].lstrip(".")
    return clean or "_"


class DiskBuffer:
    """One sink's spilled slices, oldest first, bounded in bytes (what is written and read is
    blocking file I/O: callers run it in a worker thread)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.bytes = 0
        self.events = 0
        self._unread: deque[Segment] = deque()  # not handed to the sink yet
        self._held: dict[int, Segment] = {}  # on disk: unread, or being written to the sink
        self._next = 0
        self.writing = 0  # spills in progress (reserved bytes included in ``bytes``)

    # -- state -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Anything on disk or on its way there: new slices must queue behind it."""
        return bool(self._held) or self.writing > 0

    @property
    def has_unread(self) -> bool:
        return bool(self._unread)

    def fits(self, nbytes: int) -> bool:
        """One slice always fits an empty disk buffer."""
        return self.bytes == 0 or self.bytes + nbytes <= self.max_bytes

    def oldest_age(self, now: float | None = None) -> float:
        if not self._held:
            return 0.0
        first = min(self._held.values(), key=lambda s: s.no)
        return max(0.0, (now or time.time()) - first.written_at)

    # -- files -----------------------------------------------------------------------------

    def restore(self) -> list[Segment]:
        """What an earlier process left here, oldest first (half-written files are removed)."""
        if not self.path.is_dir():
            return []
        found = []
        for p in sorted(self.path.iterdir()):
            if p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                continue
            m = _NAME.match(p.name)
            if m is None:
                continue
            try:
                seg = _read_header(p, int(m.group(1)))
            except Exception as e:
                self._set_aside(p, e)
                continue
            found.append(seg)
        for seg in found:
            self._add(seg)
        if found:
            self._next = found[-1].no + 1
        return found

    def reserve(self, nbytes: int) -> int:
        """Take the next file number and count its bytes before the (threaded) write."""
        no = self._next
        self._next += 1
        self.writing += 1
        self.bytes += nbytes
        return no

    def write(self, no: int, batch: EncodedBatch, written_at: float) -> Segment:
        """Write one encoded slice durably (blocking)."""
        self.path.mkdir(parents=True, exist_ok=True)
        rows = batch.indices()
        sizes = batch.sizes()
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        payload = np.frombuffer(batch.contiguous(), dtype=np.uint8)
        header = {
            "version": VERSION,
            "stream": batch.stream,
            "format": batch.format,
            "fingerprint": batch.schema.fingerprint.hex(),
            "written_at": written_at,
        }
        final = self.path / f"{no:012d}.npz"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                header=np.frombuffer(orjson.dumps(header), dtype=np.uint8),
                payload=payload,
                offsets=offsets,
                seq=batch.block.seq[rows],
                key=batch.block.key[rows],
                event_time=batch.block.event_time[rows],
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.path)
        return Segment(
            no, final, batch.stream, batch.format, len(rows), int(sizes.sum()), written_at
        )

    def written(self, seg: Segment, reserved: int) -> None:
        """A write finished (on the event loop): the slice is now the newest on disk."""
        self.writing -= 1
        self.bytes -= reserved
        self._add(seg)

    def failed(self, reserved: int) -> None:
        self.writing -= 1
        self.bytes -= reserved

    def next_unread(self) -> Segment:
        return self._unread.popleft()

    def read(self, seg: Segment, schema: EventSchema) -> EncodedBatch:
        """A spilled slice back as an encoded batch for ``schema`` (blocking)."""
        with np.load(seg.path, allow_pickle=False) as z:
            header = orjson.loads(z["header"].tobytes())
            if header["fingerprint"] != schema.fingerprint.hex():
                raise ValueError(
                    f"{seg.path}: written for another schema of {seg.stream} "
                    f"({header['fingerprint'][:12]}, now {schema.fingerprint.hex()[:12]})"
                )
            payload = z["payload"]
            seq, key, times = z["seq"], z["key"], z["event_time"]
            offsets = z["offsets"]
        block = RecordBlock(stream=seg.stream, seq=seq, event_time=times, key=key, columns={})
        return EncodedBatch(
            seg.stream, schema, seg.format, memoryview(payload.tobytes()), offsets, block
        )

    def remove(self, seg: Segment) -> None:
        """The sink is done with it."""
        if self._held.pop(seg.no, None) is None:
            return
        self.bytes -= seg.nbytes
        self.events -= seg.events
        seg.path.unlink(missing_ok=True)

    def set_aside(self, seg: Segment, error: Exception) -> None:
        """A file that cannot be read: out of the queue, kept for a human as ``*.bad``."""
        if self._held.pop(seg.no, None) is not None:
            self.bytes -= seg.nbytes
            self.events -= seg.events
        self._set_aside(seg.path, error)

    def clean_up(self) -> None:
        """The run is over and nothing is left: remove the empty folders."""
        if not self._held and self.path.is_dir():
            with contextlib.suppress(OSError):
                self.path.rmdir()
                self.path.parent.rmdir()

    def _add(self, seg: Segment) -> None:
        self._unread.append(seg)
        self._held[seg.no] = seg
        self.bytes += seg.nbytes
        self.events += seg.events

    def _set_aside(self, path: Path, error: Exception) -> None:
        log.error("disk_buffer_unreadable", file=str(path), error=str(error))
        with contextlib.suppress(OSError):
            path.rename(path.with_suffix(".bad"))


def _read_header(path: Path, no: int) -> Segment:
    with np.load(path, allow_pickle=False) as z:
        header = orjson.loads(z["header"].tobytes())
        if header.get("version") != VERSION:
            raise ValueError(f"disk buffer file version {header.get('version')}, not {VERSION}")
        events = len(z["seq"])
        nbytes = int(z["offsets"][-1])
    return Segment(
        no, path, header["stream"], header["format"], events, nbytes, header["written_at"]
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
