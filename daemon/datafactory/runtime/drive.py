"""The driver: the one way a pack is driven. Stream mode, batch mode and ``sample`` all use it.

A run's time is cut into slices ``[a, b)``. In each, a *paced* stream gets exactly the events
its rate profile earns (``floor(share x R(b))`` so far, ``R`` the profile's integral and
``share`` the pack shard's part of the activity), placed along the profile, and the pack
generates them *at those times* (prices, opening hours, state: all as of when each event
happens) and learns that they were released (its driven streams derive their events from
them). A *driven* stream then releases, in event-time order, what the pack's simulation made
that is due by the slice's end. Labels (a pack's own domain errors) stay on the blocks for the
caller's ground truth.

Nothing here waits or does I/O: the engine decides *when* a slice is released (wall or
simulated clock), batch mode walks days as fast as it can. The same slices give the same
events, so the same seq is the same event whoever drove it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.config import StreamPlan
from datafactory.engine.blocks import RecordBlock
from datafactory.engine.rate import event_times
from datafactory.pack import Pack, StreamGenerator

# driven streams: most events one poll hands out (they come in event-time order anyway)
POLL_LIMIT = 1_000_000


@dataclass(eq=False)
class Lane:
    """One stream's progress through the run."""

    plan: StreamPlan
    pack: Pack
    gen: StreamGenerator
    seq: int  # the next event's seq
    driven: bool
    profile: Any  # the rate profile (paced streams)
    t0: float = 0.0  # where the profile starts (epoch seconds)
    # paced: events earned by b = floor(share x (R(b) - base)); base moves when the profile
    # changes or time is skipped (a pause, a stream that fell too far behind)
    earned: int = 0
    base: float = 0.0

    @property
    def name(self) -> str:
        return self.plan.event_type

    def due(self, b_us: int) -> int:
        """Events earned by ``b`` in total (to the clocks' resolution, 1 µs)."""
        b = b_us / 1e6
        share = self.pack.shard_share
        value: float = share * (self.profile.cumulative(b, self.t0) - self.base)
        tolerance = 1e-6 * share * max(self.profile.rate(b, self.t0), 1.0) + 1e-9
        due: int = math.floor(value + tolerance)
        return max(0, due)


def uniform_times(n: int, t_start_us: int, t_end_us: int) -> npt.NDArray[np.int64]:
    """``n`` event times spread evenly over ``[t_start, t_end)`` (tests, samples, benches)."""
    span = max(t_end_us - t_start_us, 0)
    return t_start_us + (np.arange(n, dtype=np.int64) * span) // max(n, 1)


class Driver:
    """Drives packs' streams through slices of time; see the module's docstring."""

    def __init__(self, packs: dict[str, Pack], block_size: int) -> None:
        self.packs = packs
        self.block_size = block_size
        self.lanes: dict[str, Lane] = {}

    def add(
        self, plan: StreamPlan, *, t0: float, seq: int = 0, gen: StreamGenerator | None = None
    ) -> Lane:
        """A stream to drive, from ``seq`` on (its generator: the pack's, or one carried over
        from an earlier run); ``t0``: where its rate profile starts (epoch seconds)."""
        pack = self.packs[plan.pack]
        driven = plan.driven or type(pack).clock_driven
        lane = Lane(
            plan, pack, gen or pack.stream(plan.stream), seq, driven, plan.rate, t0, base=0.0
        )
        self.lanes[plan.event_type] = lane
        return lane

    # -- paced streams -------------------------------------------------------------------

    def paced(self, name: str, a_us: int, b_us: int, limit: int | None = None) -> list[RecordBlock]:
        """What lane ``name`` earns in ``[a, b)`` (at most ``limit`` more events in all):
        generated at their times, released to the pack, in blocks of ``block_size``."""
        lane = self.lanes[name]
        n = lane.due(b_us) - lane.earned
        if limit is not None:
            n = min(n, limit)
        if n <= 0:
            return []
        times = event_times(lane.profile, lane.t0, a_us, b_us, n)
        times = np.clip(times, a_us, b_us - 1)  # [a, b): what happens at b is the next slice's
        out = []
        for lo in range(0, n, self.block_size):
            t = times[lo : lo + self.block_size].astype(np.int64)
            with lane.pack.lock:
                block = lane.gen.generate(lane.seq, t)
                lane.gen.released(block)
            lane.seq += len(t)
            out.append(block)
        lane.earned += n
        return out

    def skip(self, name: str, a_us: int, b_us: int) -> int:
        """Lane ``name`` earns nothing in ``[a, b)`` (paused, or too far behind to catch up):
        what it had earned by ``a`` stays earned; returns how many events it forgoes."""
        lane = self.lanes[name]
        lost = lane.due(b_us) - lane.due(a_us)
        r = lane.profile.cumulative
        lane.base += r(b_us / 1e6, lane.t0) - r(a_us / 1e6, lane.t0)
        return lost

    def set_profile(self, name: str, profile: Any, at_us: int) -> None:
        """A new rate profile from ``at`` on; what was earned by then stays earned."""
        lane = self.lanes[name]
        at = at_us / 1e6
        earned_part = lane.profile.cumulative(at, lane.t0) - lane.base
        lane.profile = profile
        lane.base = profile.cumulative(at, lane.t0) - earned_part

    # -- driven streams ------------------------------------------------------------------

    def poll(
        self, name: str, until_us: int, limit: int = POLL_LIMIT, final: bool = False
    ) -> RecordBlock | None:
        """At most ``limit`` of lane ``name``'s pending events due by ``until`` (None: none)."""
        lane = self.lanes[name]
        with lane.pack.lock:
            block = lane.gen.poll(until_us, lane.seq, limit, final)
        if block is None or not len(block):
            return None
        lane.seq += len(block)
        return block

    # -- whole slices (batch mode, samples) ----------------------------------------------

    def step(self, a_us: int, b_us: int, final: bool = False) -> Iterable[RecordBlock]:
        """Every lane through ``[a, b)``: paced streams first, then what the driven streams
        have due before ``b`` (``final``: the run ends at ``b``; the packs' days are made
        complete first)."""
        for lane in list(self.lanes.values()):
            if not lane.driven:
                yield from self.paced(lane.name, a_us, b_us)
        if final:
            for pack in self.packs.values():
                with pack.lock:
                    pack.advance(b_us)
        for lane in list(self.lanes.values()):
            if lane.driven:
                while (block := self.poll(lane.name, b_us - 1, final=final)) is not None:
                    yield block
