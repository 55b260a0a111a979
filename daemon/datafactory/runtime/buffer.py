"""A sink's buffer: slices released to the sink and not taken by its writer yet.

The memory part is bounded in events; a ``type: disk`` buffer adds a bounded on-disk part
(:mod:`.spill`) behind it. The order is release order: a slice goes to memory only while
nothing is on disk, so memory always holds the oldest slices and the writer takes memory
first, then disk.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from datafactory.engine.blocks import RecordBlock
from datafactory.runtime.accounting import SliceBook
from datafactory.runtime.spill import DiskBuffer, Segment


@dataclass(slots=True)
class Item:
    """A slice on its way to one sink: released this run (``book``), or read back from disk
    (``segment``: the book that released it belonged to an earlier process, or it is done
    for the mark already)."""

    stream: str
    block: RecordBlock
    sid: int
    book: SliceBook | None
    since: float  # monotonic time it was accepted
    segment: Segment | None = None


class Buffer:
    """Memory part bounded in events (one slice always fits when empty), optional disk part."""

    def __init__(self, max_events: int, disk: DiskBuffer | None = None) -> None:
        self.max_events = max_events
        self.disk = disk
        self.events = 0
        self.high_water = 0
        self.closed = False
        # the run is suspended (daemon shutdown): the writer takes what is in memory (to move
        # it to disk), not what is on disk
        self.suspending = False
        self._items: deque[Item] = deque()
        self._room = asyncio.Event()
        self._ready = asyncio.Event()

    def takes(self, n: int) -> bool:
        """Whether the memory part takes ``n`` more events now (never ahead of the disk)."""
        if self.disk is not None and self.disk.busy:
            return False
        return self.events == 0 or self.events + n <= self.max_events

    def put_nowait(self, item: Item) -> None:
        self._items.append(item)
        self.events += len(item.block)
        self.high_water = max(self.high_water, self.events)
        self._ready.set()

    def readable(self) -> None:
        """Something was spilled or the buffer closed: wake the writer."""
        self._ready.set()

    def room(self) -> None:
        """Something left (memory or disk): wake whoever waits for room."""
        self._room.set()

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._room.clear()
            await self._room.wait()

    def close(self, suspend: bool = False) -> None:
        self.closed = True
        self.suspending = suspend and self.disk is not None
        self._ready.set()

    async def take(self) -> Item | Segment | None:
        """The oldest slice: from memory, else from disk; ``None`` once closed and empty."""
        while True:
            if self._items:
                item = self._items.popleft()
                self.events -= len(item.block)
                self._room.set()
                return item
            if self.disk is not None and self.disk.has_unread and not self.suspending:
                return self.disk.next_unread()
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
