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

Every call that moves a lane or a pack on is a *command* (``start``, ``paced``, ``skip``,
``profile``, ``poll``), taken under the pack's lock and, when the driver has a ``journal``,
recorded there in the order the packs saw them (:mod:`.journal`): the same commands replayed
on the same packs make the same events again, which is how a restarted run continues the
same business.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
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
YEAR_US = 366 * 86_400_000_000
# a generated block spans at most this much event time: what is made keeps its times (the
# pack's side effects, a sale's stock movement, were made with them), so this is how far a
# pause, a skip or a new rate can lag behind (at a low rate: up to BLOCK_MIN events, within
# BLOCK_HORIZON_MAX_US: a pack makes a block from its state at its first event, so at a low
# rate its stock and customers must not run ahead)
BLOCK_HORIZON_US = 1_000_000
BLOCK_MIN = 256
BLOCK_HORIZON_MAX_US = 3_600_000_000


@dataclass(eq=False)
class Lane:
    """One stream's progress through the run."""

    plan: StreamPlan
    pack: Pack
    gen: StreamGenerator
    seq: int  # the next event's seq to release
    driven: bool
    profile: Any  # the rate profile (paced streams)
    t0: float = 0.0  # where the profile starts (epoch seconds)
    # paced: events earned by b = floor(share x (R(b) - base)); base moves when the profile
    # changes or time is skipped (a pause, a stream that fell too far behind)
    earned: int = 0
    base: float = 0.0
    # paced: the block being released (generated whole, at its events' planned times), and
    # how far; the seq the lane started at (event k of the lane is due when k + 1 are)
    pending: RecordBlock | None = None
    pos: int = 0
    origin: int = 0
    plan_us: int | None = None  # when the last planned event is earned (the next block's start)
    at_us: int | None = None  # how far the lane's time has gone (start, slices, skips)

    @property
    def name(self) -> str:
        return self.plan.event_type

    def carry(self) -> dict[str, Any]:
        """What a later run needs to go on with this lane (saved with the packs' state)."""
        keys = ("gen", "seq", "earned", "pending", "pos", "plan_us")
        return {k: getattr(self, k) for k in keys}

    def due(self, b_us: int) -> int:
        """Events earned by ``b`` in total (to the clocks' resolution, 1 µs)."""
        b = b_us / 1e6
        share = self.pack.shard_share
        value: float = share * (self.profile.cumulative(b, self.t0) - self.base)
        tolerance = 1e-6 * share * max(self.profile.rate(b, self.t0), 1.0) + 1e-9
        due: int = math.floor(value + tolerance)
        return max(0, due)

    def time_of(self, count: int, after_us: int) -> int:
        """When (epoch µs, not before ``after``) the lane will have earned ``count`` events,
        by the profile as it stands (a year on at the latest: a profile may stop)."""
        share = self.pack.shard_share
        target = self.base + count / share
        t0 = self.t0

        def behind(t_us: int) -> bool:
            t = t_us / 1e6
            slack = 1e-6 * max(self.profile.rate(t, t0), 1.0)  # due() counts to 1 µs
            return bool(self.profile.cumulative(t, t0) < target - slack)

        lo = after_us
        if not behind(lo):
            return lo
        rate = max(self.profile.rate(lo / 1e6, t0), 1e-3)
        step = max(1, int((target - self.profile.cumulative(lo / 1e6, t0)) / rate * 1e6))
        last = lo + YEAR_US
        hi = min(lo + step, last)
        while behind(hi):
            if hi >= last:
                return last
            lo, step = hi, step * 2
            hi = min(lo + step, last)
        if hi - lo > 1 and behind(hi - 1):  # the rate's estimate was the time itself (a
            return hi  # constant rate): no bisection needed
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if behind(mid):
                lo = mid
            else:
                hi = mid
        return hi


def uniform_times(n: int, t_start_us: int, t_end_us: int) -> npt.NDArray[np.int64]:
    """``n`` event times spread evenly over ``[t_start, t_end)`` (tests, samples, benches)."""
    span = max(t_end_us - t_start_us, 0)
    return t_start_us + (np.arange(n, dtype=np.int64) * span) // max(n, 1)


class Driver:
    """Drives packs' streams through slices of time; see the module's docstring."""

    def __init__(
        self,
        packs: dict[str, Pack],
        block_size: int,
        journal: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.packs = packs
        self.block_size = block_size
        self.lanes: dict[str, Lane] = {}
        # each command, recorded under the pack's lock (in the order the pack saw them)
        self.journal = journal

    def _record(self, op: str, name: str, **args: Any) -> None:
        if self.journal is not None:
            self.journal({"op": op, "s": name, **args})

    def add(
        self,
        plan: StreamPlan,
        *,
        t0: float,
        seq: int = 0,
        carried: dict[str, Any] | None = None,
    ) -> Lane:
        """A stream to drive, from ``seq`` on, or as ``carried`` (:meth:`Lane.carry`: an
        earlier run's generator, seq, block in progress); ``t0``: where its rate profile
        starts (epoch seconds)."""
        pack = self.packs[plan.pack]
        driven = plan.driven or type(pack).clock_driven
        lane = Lane(plan, pack, pack.stream(plan.stream), seq, driven, plan.rate, t0)
        for k, v in (carried or {}).items():
            setattr(lane, k, v)
        lane.origin = lane.seq - lane.earned
        self.lanes[plan.event_type] = lane
        return lane

    def start(self, name: str, t0_us: int) -> None:
        """Lane ``name``'s profile starts (again) at ``t0``: a stream run starting, or going
        on from a batch's history (its block in progress moves to the new plan)."""
        lane = self.lanes[name]
        with lane.pack.lock:
            lane.t0, lane.base, lane.earned, lane.origin = t0_us / 1e6, 0.0, 0, lane.seq
            lane.at_us = t0_us
            lane.pack.begin(t0_us)  # its models too, not at the first poll (shards agree)
            self._retime(lane, t0_us)
            self._record("start", name, t0=t0_us)

    # -- paced streams -------------------------------------------------------------------
    #
    # Events are generated in blocks aligned on seq (multiples of block_size), each whole, at
    # its events' planned times (when the profile earns each), and released as they come due.
    # So what an event is does not depend on how time was sliced (a wall clock's timing, a
    # pause): the same seq is the same event, in stream mode, batch mode and samples.

    def paced(
        self,
        name: str,
        a_us: int,
        b_us: int,
        limit: int | None = None,
        end: bool = False,
        one_block: bool = False,
    ) -> list[RecordBlock]:
        """Lane ``name``'s events planned in ``[a, b)`` (at most ``limit`` more in all), in
        order (``one_block``: from one generated block only, one sink write: the rest come
        with the next call, see :meth:`next_time`). ``end``: the window closes at ``b``:
        exactly what the profile earned by then, the last ones' times held at ``b``."""
        lane = self.lanes[name]
        with lane.pack.lock:
            out = self._paced(lane, a_us, b_us, limit, end, one_block)
            lane.at_us = b_us
            self._record("paced", name, a=a_us, b=b_us, limit=limit, end=end, one=one_block)
        return out

    def _paced(
        self, lane: Lane, a_us: int, b_us: int, limit: int | None, end: bool, one_block: bool
    ) -> list[RecordBlock]:
        quota = lane.due(b_us) - lane.earned if end else None
        out: list[RecordBlock] = []
        while quota is None or quota > 0:
            if lane.pending is None or lane.pos >= len(lane.pending):
                lane.pending, lane.pos = self._make(lane), 0
                if out and one_block and not end:  # the next block is made: its first
                    break  # event's time is known (next_time)
            times = lane.pending.event_time
            if quota is not None:
                stop = lane.pos + min(quota, len(times) - lane.pos)
            else:  # planned before b, and no more than the profile earned by b
                stop = lane.pos + int(np.searchsorted(times[lane.pos :], b_us, side="left"))
                stop = min(stop, lane.pos + max(0, lane.due(b_us) - lane.earned))
            if limit is not None:
                stop = min(stop, lane.pos + limit)
            if stop > lane.pos:
                piece = lane.pending.take(slice(lane.pos, stop))
                if end:
                    piece.event_time = np.minimum(piece.event_time, b_us)
                k = stop - lane.pos
                lane.pos, lane.seq, lane.earned = stop, lane.seq + k, lane.earned + k
                quota = None if quota is None else quota - k
                limit = None if limit is None else limit - k
                out.append(piece)
            if stop < len(times) or limit == 0:
                break  # the next event is later (or the limit is reached)
        return out

    def next_time(self, name: str) -> int | None:
        """The planned time of lane ``name``'s next event, if it is already made."""
        lane = self.lanes[name]
        if lane.pending is None or lane.pos >= len(lane.pending):
            return None
        return int(lane.pending.event_time[lane.pos])

    def owed_since(self, name: str, now_us: int) -> int:
        """When lane ``name``'s next event was due: how far behind its profile it is (a
        lane that earned more than it could make, at a rate too high, is behind by the
        time those events were due, whatever its slices' times say)."""
        lane = self.lanes[name]
        start = lane.plan_us if lane.plan_us is not None else round(lane.t0 * 1e6)
        block, count = lane.pending, lane.seq - lane.origin
        if block is not None and lane.pos < len(block):
            # what was made goes out as it is (however late): owed is what comes after it
            count += len(block) - lane.pos
            start = max(start, int(block.event_time[-1]))
        return min(now_us, lane.time_of(count, start))

    def _make(self, lane: Lane) -> RecordBlock:
        """The next block of a lane, at its events' planned times: up to the next multiple of
        block_size, and no more than BLOCK_HORIZON_US of them (or BLOCK_MIN events, within
        BLOCK_HORIZON_MAX_US: see there)."""
        first = lane.seq
        c0 = first - lane.origin
        start = lane.plan_us if lane.plan_us is not None else round(lane.t0 * 1e6)
        t_prev = lane.time_of(c0, start)
        aligned = (first // self.block_size + 1) * self.block_size - first
        n = max(
            lane.due(t_prev + BLOCK_HORIZON_US) - c0,
            min(BLOCK_MIN, lane.due(t_prev + BLOCK_HORIZON_MAX_US) - c0),
        )
        n = max(1, min(aligned, n))
        times = self._plan(lane, c0, n, t_prev)
        block = lane.gen.generate(first, times)  # the pack's lock is held (paced)
        lane.gen.released(block)
        return block

    @staticmethod
    def _plan(lane: Lane, c0: int, n: int, t_prev: int) -> npt.NDArray[np.int64]:
        """Planned times of the lane's events ``c0 .. c0 + n - 1`` (event k: when k + 1 are
        earned), placed along the profile from ``t_prev`` (when ``c0`` were earned)."""
        t_last = lane.time_of(c0 + n, t_prev)
        lane.plan_us = t_last
        return np.asarray(event_times(lane.profile, lane.t0, t_prev, t_last, n), dtype=np.int64)

    def _retime(self, lane: Lane, at_us: int) -> None:
        """The profile starts again at ``at`` (a stream run going on from a batch's history):
        the rest of the block in progress moves to the new plan's times."""
        lane.plan_us = at_us
        block = lane.pending
        if block is None or lane.pos >= len(block):
            return
        c0 = lane.seq - lane.origin
        times = self._plan(lane, c0, len(block) - lane.pos, lane.time_of(c0, at_us))
        block.event_time = np.concatenate([block.event_time[: lane.pos], times])

    @staticmethod
    def _made_until(lane: Lane) -> int | None:
        """The time of the last event made and not released yet (None: none is)."""
        block = lane.pending
        if block is None or lane.pos >= len(block):
            return None
        return int(block.event_time[-1])

    def _replan(self, lane: Lane, at_us: int) -> None:
        """The plan changed at ``at`` (a pause, a skip, a new profile): the next block is
        planned from there (or after what is made, which stays as it is)."""
        if self._made_until(lane) is None:
            lane.plan_us = at_us

    def skip(self, name: str, a_us: int, b_us: int) -> int:
        """Lane ``name`` earns nothing in ``[a, b)`` (paused, or too far behind to catch up):
        what it had earned by ``a`` stays earned; returns how many events it forgoes. Events
        already made keep their times (their pack made its side effects with them): they go
        out first, late, within what the lane earns from ``b`` on."""
        lane = self.lanes[name]
        with lane.pack.lock:
            lost = lane.due(b_us) - lane.due(a_us)
            r = lane.profile.cumulative
            lane.base += r(b_us / 1e6, lane.t0) - r(a_us / 1e6, lane.t0)
            lane.at_us = max(lane.at_us or b_us, b_us)
            self._replan(lane, b_us)
            self._record("skip", name, a=a_us, b=b_us)
        return lost

    def set_profile(
        self, name: str, profile: Any, at_us: int, owe_at_most_s: float | None = None
    ) -> int:
        """A new rate profile from ``at`` on; what was earned by then stays earned (events
        already made keep their times, and go out as the new profile earns them), but no
        more than ``owe_at_most_s`` seconds of the new profile of it (a stream far behind a
        huge rate would otherwise go on releasing that backlog long after a lower rate was
        set): returns how many events the lane forgoes."""
        lane = self.lanes[name]
        at = at_us / 1e6
        with lane.pack.lock:
            earned_part = lane.profile.cumulative(at, lane.t0) - lane.base
            lane.profile = profile
            lane.base = profile.cumulative(at, lane.t0) - earned_part
            lost = 0
            if owe_at_most_s is not None:
                owed = lane.due(at_us) - lane.earned
                r = profile.cumulative
                cap = lane.pack.shard_share * (r(at, lane.t0) - r(at - owe_at_most_s, lane.t0))
                lost = max(0, owed - math.ceil(cap))
                lane.base += lost / lane.pack.shard_share
            self._replan(lane, at_us)
            rate = profile.model_dump(mode="json")
            self._record("profile", name, at=at_us, rate=rate, owe=owe_at_most_s)
        return lost

    # -- driven streams ------------------------------------------------------------------

    def poll(
        self, name: str, until_us: int, limit: int = POLL_LIMIT, final: bool = False
    ) -> RecordBlock | None:
        """At most ``limit`` of lane ``name``'s pending events due by ``until`` (None: none)."""
        lane = self.lanes[name]
        with lane.pack.lock:
            block = lane.gen.poll(until_us, lane.seq, limit, final)
            if block is not None and len(block):
                lane.seq += len(block)
            self._record("poll", name, until=until_us, limit=limit, final=final)
        return block if block is not None and len(block) else None

    # -- whole slices (batch mode, samples) ----------------------------------------------

    def step(self, a_us: int, b_us: int, final: bool = False) -> Iterable[RecordBlock]:
        """Every lane through ``[a, b)``: paced streams first, then what the driven streams
        have due before ``b`` (``final``: the run ends at ``b``; the packs' days are made
        complete first)."""
        for lane in list(self.lanes.values()):
            if not lane.driven:  # a generated block at a time: memory stays a block's
                while piece := self.paced(lane.name, a_us, b_us, one_block=True):
                    yield from piece
        if final:
            for pack in self.packs.values():
                with pack.lock:
                    pack.advance(b_us)
        for lane in list(self.lanes.values()):
            if lane.driven:
                while (block := self.poll(lane.name, b_us - 1, final=final)) is not None:
                    yield block
