"""Delivery: one sink's side of a run, isolated from every other sink.

Each sink has its own bounded buffer (in events) with a declared policy for when it is full
(Vector's ``buffer.when_full``):

* ``block``: the stream waits for room (backpressure; the sink's completeness matters more than
  the stream's pace). While it waits, the sink is *holding back* that stream, and says so.
* ``drop_newest``: the slice the sink cannot take is *shed* for this sink only: counted per
  sink, written to the manifest with its event ids, and accounted as done, so the stream and
  the other sinks keep their pace.

Behind the buffer, a two-stage pipeline: encode the next slice while the sink writes this one,
up to the sink's ``max_in_flight`` writes at once, with retries and capped backoff (partial
failures retry only the rest; a sink that lost its connection is reconnected). Lag is visible:
events accepted but not yet done, and the age of the oldest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from datafactory.chaos.base import Fault, RenderContext
from datafactory.chaos.chain import render_patches
from datafactory.config import BufferConfig
from datafactory.encoders import build_encoder
from datafactory.encoders.base import EncodedBatch, Encoder, PartialDeliveryError
from datafactory.engine.blocks import RecordBlock
from datafactory.runtime.accounting import Outcome, SliceBook
from datafactory.schema import EventSchema
from datafactory.sinks.base import NotConnectedError, Sink
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


@dataclass(frozen=True, slots=True)
class Retry:
    """How a sink's failed connects and writes are tried again."""

    attempts: int
    backoff: float
    backoff_max: float

    async def wait(self, delay: float) -> float:
        """Wait about ``delay`` (jittered: timing only, never data); the next, doubled, capped."""
        await asyncio.sleep(delay * (0.5 + random.random() / 2))
        return min(delay * 2, self.backoff_max)


@dataclass(slots=True)
class _Item:
    stream: str
    block: RecordBlock
    sid: int
    book: SliceBook
    since: float  # monotonic time it was accepted


class Buffer:
    """Slices waiting for one sink, bounded in events. One slice always fits an empty buffer."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.events = 0
        self.high_water = 0
        self._items: deque[_Item | None] = deque()
        self._room = asyncio.Event()
        self._ready = asyncio.Event()

    def fits(self, n: int) -> bool:
        return self.events == 0 or self.events + n <= self.max_events

    def put_nowait(self, item: _Item | None) -> None:
        self._items.append(item)
        self.events += len(item.block) if item is not None else 0
        self.high_water = max(self.high_water, self.events)
        self._ready.set()

    async def wait_for_room(self, n: int) -> None:
        while not self.fits(n):
            self._room.clear()
            await self._room.wait()

    async def get(self) -> _Item | None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if item is not None:
            self.events -= len(item.block)
        self._room.set()
        return item


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
    ) -> None:
        self.name = name
        self.sink = sink
        self.config = config
        self.retry = retry
        self.metrics = metrics
        self.ground_truth = ground_truth  # shed events, byte-level faults as rendered here
        self.buffer = Buffer(config.max_events)
        self.errors = 0
        self.outcomes: dict[str, Outcome] = {}
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
        )

    # -- the stream side -------------------------------------------------------------------

    async def offer(self, stream: str, block: RecordBlock, sid: int, book: SliceBook) -> None:
        """Take a released slice, or wait for room (``block``), or shed it (``drop_newest``)."""
        n = len(block)
        if not self.buffer.fits(n):
            if self.config.when_full == "drop_newest":
                self._shed(stream, block, sid, book)
                return
            await self._hold(stream, n)
        now = time.monotonic()
        self.buffer.put_nowait(_Item(stream, block, sid, book, now))
        self._pending[(stream, sid)] = (now, n)
        self.lag_events += n
        self._buffered.set(self.buffer.events)

    async def _hold(self, stream: str, n: int) -> None:
        since = time.monotonic()
        self.holding[stream] = since
        flag, blocked = self._children[stream][5:7]
        flag.set(1)
        try:
            await self.buffer.wait_for_room(n)
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

    def close(self) -> None:
        """No more slices: what is buffered is still written, then ``run`` returns."""
        self.buffer.put_nowait(None)

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

    async def connect(self) -> None:
        delay = self.retry.backoff
        for attempt in range(1, self.retry.attempts + 1):
            try:
                await self.sink.connect()
                return
            except Exception as e:
                self._error()
                log.warning("sink_connect_failed", sink=self.name, attempt=attempt, error=repr(e))
                if attempt == self.retry.attempts:
                    raise
                delay = await self.retry.wait(delay)

    async def run(self) -> None:
        """Encode and write until :meth:`close` and everything before it is done."""
        encoded: asyncio.Queue[tuple[_Item, EncodedBatch] | None] = asyncio.Queue(ENCODE_AHEAD)
        encoder = asyncio.create_task(self._encode(encoded), name=f"encode:{self.name}")
        try:
            await self._write(encoded)
        finally:
            encoder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await encoder

    async def _encode(self, out: asyncio.Queue[tuple[_Item, EncodedBatch] | None]) -> None:
        while True:
            item = await self.buffer.get()
            self._buffered.set(self.buffer.events)
            if item is None:
                await out.put(None)
                return
            batch, rendered = await off_loop(len(item.block), self._encode_one, item)
            if rendered:  # byte-level chaos as rendered for this sink
                self.ground_truth(rendered)
            await out.put((item, batch))

    def _encode_one(self, item: _Item) -> tuple[EncodedBatch, list[Fault]]:
        batch = self._encoders[item.stream].encode(item.block)
        if not item.block.patches:
            return batch, []
        # byte-level chaos, rendered for this sink's format
        return render_patches(batch, self._render[item.stream], self.name)

    async def _write(self, encoded: asyncio.Queue[tuple[_Item, EncodedBatch] | None]) -> None:
        """Deliver encoded batches, up to the sink's ``max_in_flight`` at once."""
        slots = asyncio.Semaphore(max(1, self.sink.max_in_flight))
        pending: set[asyncio.Task[None]] = set()

        async def one(item: _Item, batch: EncodedBatch) -> None:
            try:
                sent, sent_bytes, failed, retried = self._children[item.stream][:4]
                t = time.perf_counter()
                outcome = await self._deliver(batch)
                self._timer.observe(time.perf_counter() - t)
                self.outcomes[item.stream].add(outcome)
                sent.inc(outcome.acked)
                sent_bytes.inc(batch.nbytes if not outcome.failed else 0)
                failed.inc(outcome.failed)
                retried.inc(outcome.retried)
                _, n = self._pending.pop((item.stream, item.sid), (0.0, 0))
                self.lag_events -= n
                item.book.done(item.sid, self.name, outcome)
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

    async def _deliver(self, batch: EncodedBatch) -> Outcome:
        """One batch; partial failures retry only the rest."""
        delay = self.retry.backoff
        out = Outcome()
        current = batch
        for attempt in range(1, self.retry.attempts + 1):
            try:
                await self.sink.write_batch(current)
                out.acked += len(current)
                return out
            except PartialDeliveryError as e:
                out.acked += len(current) - int(e.failed.sum())
                out.failed += int(e.permanent.sum())
                current = current.subset(e.failed & ~e.permanent)
                error: Exception = e
                if len(current) == 0:
                    return out
            except Exception as e:
                error = e
            self._error()
            log.warning(
                "sink_write_failed",
                sink=self.name,
                stream=batch.stream,
                attempt=attempt,
                events=len(current),
                error=repr(error),
            )
            if attempt == self.retry.attempts:
                break
            out.retried += len(current)
            delay = await self.retry.wait(delay)
            if isinstance(error, NotConnectedError):
                with contextlib.suppress(Exception):
                    await self.sink.connect()
        log.error("sink_batch_failed", sink=self.name, stream=batch.stream, events=len(current))
        out.failed += len(current)
        return out

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
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds(), 3),
            "holding_back": sorted(self.holding),
        }
