"""Clocks: wall time for stream mode, simulated time for backfills and tests.

Both answer ``now()`` in epoch seconds (float) and ``now_us()`` in epoch microseconds, and
both are awaited through ``sleep()``: the wall clock really sleeps, the simulated clock
advances its own time by the requested amount and yields to the event loop. The pacing code
is the same for both; only the clock passed in differs.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol


class Clock(Protocol):
    simulated: bool

    def now(self) -> float: ...

    def now_us(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    """Real time. ``now`` is ``time.time()``; intervals use the same source so they agree."""

    simulated = False

    def now(self) -> float:
        return time.time()

    def now_us(self) -> int:
        return time.time_ns() // 1000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimulatedClock:
    """Time that moves only when somebody sleeps: as fast as the machine allows."""

    simulated = True

    def __init__(self, start: float = 0.0) -> None:
        self._now_us = round(start * 1_000_000)

    def now(self) -> float:
        return self._now_us / 1_000_000

    def now_us(self) -> int:
        return self._now_us

    def advance(self, seconds: float) -> None:
        """Move time forward; any positive wait moves it by at least one microsecond."""
        if seconds > 0:
            self._now_us += max(1, math.ceil(seconds * 1_000_000 - 1e-6))

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)
