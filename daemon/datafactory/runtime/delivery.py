"""Delivery: one sink's side of a run, isolated from every other sink.

Each sink has its own bounded buffer (in events) with a declared policy for when it is full
(Vector's ``buffer.when_full``):

* ``block``: the stream waits for room (backpressure; the sink's completeness matters more than
  the stream's pace). While it waits, the sink is *holding back* that stream, and says so.
* ``drop_newest``: the slice the sink cannot take is *shed* for this sink only: counted per
  sink, written to the manifest with its event ids, and accounted as done, so the stream and
  the other sinks keep their pace.

A ``type: disk`` buffer spills what does not fit in memory to disk (:mod:`.spill`), bounded
in bytes, before either policy applies: a lagging sink catches up later, across restarts, and
its stream keeps its pace. On a daemon shutdown (``close(suspend=True)``) it also moves what
is in memory to disk instead of waiting for the sink.

Behind the buffer, a two-stage pipeline: encode the next slice while the sink writes this one,
up to the sink's ``max_in_flight`` writes at once, with retries and capped backoff (partial
failures retry only the rest; a sink that lost its connection is reconnected). Lag is visible:
events accepted but not yet done, and the age of the oldest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from datafactory.chaos.base import Fault, RenderContext
from datafactory.chaos.chain import render_patches
from datafactory.config import BufferConfig
from datafactory.encoders import build_encoder
from datafactory.encoders.base import EncodedBatch, Encoder
from datafactory.engine.blocks import RecordBlock
from datafactory.runtime.accounting import Outcome, SliceBook
from datafactory.runtime.buffer import Buffer, Item
from datafactory.runtime.spill import DiskBuffer, Segment
from datafactory.runtime.writes import Retry, connect, deliver
from datafactory.schema import EventSchema
from datafactory.sinks.base import Sink
from datafactory.telemetry.metrics import Metrics

log = structlog.get_logger("datafactory.delivery")
T = TypeVar("T")

# encoded batches waiting for the sink's writes
ENCODE_AHEAD = 2
# work on more events than this runs off the event loop (numpy and the compiled encoders drop
# the GIL): making, chaos, encoding
OFF_LOOP_ROWS = 512


async def off_loop(n: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, in a worker thread when it works on more than OFF_LOOP_ROWS events."""
    return await asyncio.to_thread(fn, *args) if n > OFF_LOOP_ROWS else fn(*args)


class SinkDelivery:
    """One sink of a run: its buffer, encoders, writes, retries, counts and lag."""

    def __init__(
        self,
        name: str,
        sink: Sink,
        config: BufferConfig,
        retry: Retry,
        metrics: Metrics,
        ground_truth: Callable[[list[Fault]], None],
        disk_path: Path | None = None,
    ) -> None:
        """``disk_path``: where a ``type: disk`` buffer keeps its files."""
        self.name = name
        self.sink = sink
        self.config = config
        self.retry = retry
        self.metrics = metrics
        self.ground_truth = ground_truth  # shed events, byte-level faults as rendered here
        disk = None
        if config.type == "disk":
            assert disk_path is not None, f"sink {name}: a disk buffer needs a folder"
            disk = DiskBuffer(disk_path, config.max_bytes)
        self.disk = disk
        self.buffer = Buffer(config.max_events, disk)
        self.errors = 0
        self.outcomes: dict[str, Outcome] = {}
        # what the sink did with slices it took from disk (done for the mark when spilled)
        self.drained: dict[str, Outcome] = {}
        self._encoders: dict[str, Encoder] = {}
        self._render: dict[str, RenderContext] = {}
        self._children: dict[str, tuple[Any, ...]] = {}
        # accepted and not done yet: (stream, sid) -> (accepted at, events); oldest first
        self._pending: dict[tuple[str, int], tuple[float, int]] = {}
        self.lag_events = 0
        # streams this sink is holding back now (a full `block` buffer): stream -> since
        self.holding: dict[str, float] = {}
        m = metrics
        m.buffer_capacity.labels(name).set(config.max_events)
        self._buffered = m.buffer_events.labels(name)
        self._lag_events = m.lag_events.labels(name)
        self._lag_seconds = m.lag_seconds.labels(name)
        self._timer = m.write_seconds.labels(name)
        self._disk_gauges = (
            m.disk_events.labels(name),
            m.disk_bytes.labels(name),
            m.disk_oldest.labels(name),
        )
        if disk is not None:
            m.disk_capacity.labels(name).set(config.max_bytes)

    @property
    def max_events(self) -> int:
        return self.buffer.max_events

    # -- streams ---------------------------------------------------------------------------

    def add_stream(self, stream: str, schema: EventSchema, seed: int) -> None:
        fmt = self.sink.config.format
        framed = self.sink.message_oriented
        self._encoders[stream] = build_encoder(fmt, schema, seed, single_object=framed)
        self._render[stream] = RenderContext(
            fmt, schema, fmt == "avro" and framed, self.sink.max_record_bytes
        )
        self.outcomes.setdefault(stream, Outcome())
        m, k = self.metrics, self.name
        self._children[stream] = (
            m.sent.labels(stream, k),
            m.sent_bytes.labels(stream, k),
            m.failed.labels(stream, k),
            m.retried.labels(stream, k),
            m.shed.labels(stream, k),
            m.holding_back.labels(k, stream),
            m.blocked_seconds.labels(k, stream),
            m.spilled.labels(stream, k),
        )

    # -- the stream side -------------------------------------------------------------------

    async def offer(self, stream: str, block: RecordBlock, sid: int, book: SliceBook) -> None:
        """Take a released slice: into memory, else to disk (``type: disk``), else wait for
        room (``block``) or shed it (``drop_newest``)."""
        n, buf = len(block), self.buffer
        if not buf.takes(n):
            if self.disk is not None:
                await self._spill(stream, block, sid, book)
                return
            if self.config.when_full == "drop_newest":
                self._shed(stream, block, sid, book)
                return
            await self._hold(stream, lambda: buf.takes(n))
        now = time.monotonic()
        buf.put_nowait(Item(stream, block, sid, book, now))
        self._pending[(stream, sid)] = (now, n)
        self.lag_events += n
        self._buffered.set(buf.events)

    async def _spill(
        self, stream: str, block: RecordBlock, sid: int, book: SliceBook, moving: bool = False
    ) -> None:
        """Encode a slice and write it to disk; it is then done for the mark. A full disk
        part sheds it (``drop_newest``) or waits for room (``block``); a slice ``moving`` from
        memory at a shutdown is left as it is (not done: the restart makes it again)."""
        disk = self.disk
        assert disk is not None
        batch, rendered = await off_loop(len(block), self._encode_one, stream, block)
        nbytes = batch.nbytes
        if not disk.fits(nbytes):
            if moving or self.config.when_full == "drop_newest":
                _, n = self._pending.pop((stream, sid), (0.0, 0))
                self.lag_events -= n
                if not moving:
                    self._shed(stream, block, sid, book)
                return
            await self._hold(stream, lambda: disk.fits(nbytes))
        if rendered:  # byte-level chaos as rendered for this sink, now that it will be sent
            self.ground_truth(rendered)
        no = disk.reserve(nbytes)
        try:
            seg = await asyncio.to_thread(disk.write, no, batch, time.time())
        except BaseException:
            disk.failed(nbytes)
            raise
        disk.written(seg, nbytes)
        n = len(block)
        if (stream, sid) in self._pending:  # moved from memory: it waited since then
            since, _ = self._pending.pop((stream, sid))
        else:
            since = time.monotonic()
            self.lag_events += n
        self._pending[(stream, -1 - seg.no)] = (since, n)
        self._children[stream][7].inc(n)
        book.done(sid, self.name, Outcome())
        self.buffer.readable()

    async def _hold(self, stream: str, ready: Callable[[], bool]) -> None:
        since = time.monotonic()
        self.holding[stream] = since
        flag, blocked = self._children[stream][5:7]
        flag.set(1)
        try:
            await self.buffer.wait_for(ready)
        finally:
            del self.holding[stream]
            flag.set(0)
            blocked.inc(time.monotonic() - since)

    def _shed(self, stream: str, block: RecordBlock, sid: int, book: SliceBook) -> None:
        n = len(block)
        self.outcomes[stream].shed += n
        self._children[stream][4].inc(n)
        book.done(sid, self.name, Outcome(shed=n))
        self.ground_truth(
            [
                Fault(
                    "shed",
                    self.name,
                    self.config.when_full,
                    stream,
                    block.seq.copy(),
                    block.event_time.copy(),
                    None,
                    sink=self.name,
                )
            ]
        )

    def close(self, suspend: bool = False) -> None:
        """No more slices: what is buffered is still written, then ``run`` returns.
        ``suspend`` (the daemon stops, the run goes on at its next start): a disk buffer
        moves what is in memory to disk and leaves the disk for then."""
        self.buffer.close(suspend)

    def restore(self) -> None:
        """Queue what an earlier process of this run left on disk, before anything new."""
        if self.disk is None:
            return
        found = self.disk.restore()
        now_wall, now = time.time(), time.monotonic()
        for seg in found:
            since = now - max(0.0, now_wall - seg.written_at)
            self._pending[(seg.stream, -1 - seg.no)] = (since, seg.events)
            self.lag_events += seg.events
        if found:
            events = sum(seg.events for seg in found)
            log.info("disk_buffer_restored", sink=self.name, files=len(found), events=events)
            self.buffer.readable()

    # -- the sink side ---------------------------------------------------------------------

    def lag_seconds(self) -> float:
        if not self._pending:
            return 0.0
        return time.monotonic() - next(iter(self._pending.values()))[0]

    def sample(self) -> None:
        """Refresh the lag gauges (once a second)."""
        self._lag_events.set(self.lag_events)
        self._lag_seconds.set(self.lag_seconds())
        self._buffered.set(self.buffer.events)
        if self.disk is not None:
            events, nbytes, oldest = self._disk_gauges
            events.set(self.disk.events)
            nbytes.set(self.disk.bytes)
            oldest.set(self.disk.oldest_age())

    async def connect(self) -> None:
        await connect(self.sink, self.retry, self._error)

    async def run(self) -> None:
        """Encode and write until :meth:`close` and everything before it is done."""
        encoded: asyncio.Queue[tuple[Item, EncodedBatch] | None] = asyncio.Queue(ENCODE_AHEAD)
        encoder = asyncio.create_task(self._encode(encoded), name=f"encode:{self.name}")
        try:
            await self._write(encoded)
        finally:
            encoder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await encoder
        if self.disk is not None and not self.buffer.suspending:
            self.disk.clean_up()

    async def _encode(self, out: asyncio.Queue[tuple[Item, EncodedBatch] | None]) -> None:
        while True:
            got = await self.buffer.take()
            self._buffered.set(self.buffer.events)
            if got is None:
                await out.put(None)
                return
            if isinstance(got, Segment):
                read = await self._read(got)
                if read is not None:
                    await out.put(read)
                continue
            if self.buffer.suspending:  # the daemon stops: to disk, for its next start
                assert got.book is not None
                await self._spill(got.stream, got.block, got.sid, got.book, moving=True)
                continue
            n = len(got.block)
            batch, rendered = await off_loop(n, self._encode_one, got.stream, got.block)
            if rendered:  # byte-level chaos as rendered for this sink
                self.ground_truth(rendered)
            await out.put((got, batch))

    async def _read(self, seg: Segment) -> tuple[Item, EncodedBatch] | None:
        """A spilled slice, back from disk; one that cannot be read is set aside."""
        disk = self.disk
        assert disk is not None
        key = (seg.stream, -1 - seg.no)
        try:
            if seg.stream not in self._encoders:
                raise ValueError(f"stream {seg.stream} is not sent to this sink in this run")
            schema = self._encoders[seg.stream].schema
            batch = await asyncio.to_thread(disk.read, seg, schema)
        except Exception as e:
            disk.set_aside(seg, e)
            _, n = self._pending.pop(key, (0.0, 0))
            self.lag_events -= n
            self._error()
            return None
        since, _ = self._pending.get(key, (time.monotonic(), 0))
        return Item(seg.stream, batch.block, key[1], None, since, seg), batch

    def _encode_one(self, stream: str, block: RecordBlock) -> tuple[EncodedBatch, list[Fault]]:
        # byte-level chaos (if any), rendered for this sink's format
        return render_patches(self._encoders[stream], block, self._render[stream], self.name)

    async def _write(self, encoded: asyncio.Queue[tuple[Item, EncodedBatch] | None]) -> None:
        """Deliver encoded batches, up to the sink's ``max_in_flight`` at once."""
        slots = asyncio.Semaphore(max(1, self.sink.max_in_flight))
        pending: set[asyncio.Task[None]] = set()

        async def one(item: Item, batch: EncodedBatch) -> None:
            try:
                sent, sent_bytes, failed, retried = self._children[item.stream][:4]
                t = time.perf_counter()
                outcome = await deliver(self.sink, batch, self.retry, self._error)
                self._timer.observe(time.perf_counter() - t)
                self.outcomes[item.stream].add(outcome)
                sent.inc(outcome.acked)
                sent_bytes.inc(batch.nbytes if not outcome.failed else 0)
                failed.inc(outcome.failed)
                retried.inc(outcome.retried)
                _, n = self._pending.pop((item.stream, item.sid), (0.0, 0))
                self.lag_events -= n
                if item.book is not None:
                    item.book.done(item.sid, self.name, outcome)
                else:  # from disk: done for the mark when it was spilled
                    self.drained.setdefault(item.stream, Outcome()).add(outcome)
                if item.segment is not None and self.disk is not None:
                    self.disk.remove(item.segment)
                    self.buffer.room()
            finally:
                slots.release()

        try:
            while True:
                await slots.acquire()  # before taking: nothing waits outside a bounded queue
                got = await encoded.get()
                if got is None:
                    slots.release()
                    break
                task = asyncio.create_task(one(*got))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)
        finally:
            for task in pending:
                task.cancel()

    def _error(self) -> None:
        self.errors += 1
        self.metrics.sink_errors.labels(self.name).inc()

    # -- views -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "sent": {s: o.acked for s, o in self.outcomes.items()},
            "failed": {s: o.failed for s, o in self.outcomes.items()},
            "retried": {s: o.retried for s, o in self.outcomes.items()},
            "shed": {s: o.shed for s, o in self.outcomes.items()},
            "errors": self.errors,
            "buffer": {
                "events": self.buffer.events,
                "max_events": self.buffer.max_events,
                "when_full": self.config.when_full,
            },
            "disk": None
            if self.disk is None
            else {
                "events": self.disk.events,
                "bytes": self.disk.bytes,
                "max_bytes": self.disk.max_bytes,
                "oldest_seconds": round(self.disk.oldest_age(), 3),
            },
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds(), 3),
            "holding_back": sorted(self.holding),
        }
