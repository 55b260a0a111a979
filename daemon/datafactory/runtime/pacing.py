"""Stream mode's timing: when each slice of a stream is released, on a wall or simulated clock.

A *paced* stream walks its time in slices ``[a, b)``: once its clock reaches ``b`` (a wall
clock is waited for; a simulated clock jumps), the driver makes exactly the events its profile
earned in the slice, at their own times, and they are released. Nothing is made ahead, so a
pause, a rate change or the run's end applies at the next slice, exactly:

* a pause earns nothing: on resume, the time since the pause is skipped;
* a stream that fell behind its wall clock (a busy machine, a sink that blocks) catches up
  on at most ``CATCH_UP`` seconds; what it could not make up is counted as *skipped*;
* ``run.duration`` ends the last slice at the run's end: a run releases what its profile
  earns over its window, whatever the rate, block size or batch size.

A *driven* stream releases, in event-time order, what its pack's simulation made that is due:
by the time every paced stream of the pack has reached, or by the clock (clock-driven packs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from datafactory.chaos import Chain
from datafactory.config import EngineSection, StreamPlan
from datafactory.engine.blocks import RecordBlock
from datafactory.engine.clock import Clock
from datafactory.pack import Pack
from datafactory.runtime.accounting import SliceBook
from datafactory.runtime.delivery import SinkDelivery, off_loop
from datafactory.runtime.drive import Driver, Lane

# wall clock: how far behind its profile a stream may fall and still catch up
CATCH_UP = 1.0
# simulated clock: a slice spans about batch_max events' time, within these bounds (s)
SIMULATED_SLICE_MIN = 0.001
SIMULATED_SLICE_MAX = 3600.0
# a wall clock is looked at at least this often while a slice is not due
WALL_POLL = 0.25
# packs whose driven streams follow the clock (no paced stream): how far a simulated clock
# jumps when nothing is due, and how often the wall clock is looked at. The step only sets how
# much is released per poll (the packs step their own models; the data is the same for any
# step): a day gives sinks big blocks and few round trips (15 min made 3x the CPU in tiny
# writes; 6 h left the healthcare run waiting on its polls: 100k vs 125-150k events/s)
CLOCK_DRIVEN_STEP = 86_400.0
CLOCK_DRIVEN_POLL = 0.2


@dataclass(eq=False)
class StreamRuntime:
    plan: StreamPlan
    pack: Pack
    lane: Lane
    clock: Clock
    sinks: list[SinkDelivery]
    book: SliceBook  # what every sink is done with: the checkpoint mark and the counts below
    chaos: Chain | None = None
    start_us: int = 0  # where the stream's time starts
    end_us: int | None = None  # where it ends (run.duration)
    generated: int = 0
    released: int = 0
    skipped: int = 0  # events a wall-clock stream could not catch up on
    done: bool = False
    rate_now: float = 0.0
    removed: bool = False  # stopped live by a reload
    # the time this stream has released up to (paced); what driven streams follow
    released_until_us: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # driven: sources moved on
    paused_at_us: int = 0  # the stream's clock when the run was last paused
    new_profile: Any = None  # a rate change, applied at the next slice
    # a restarted run: the stream goes on along its journaled timeline, and first sends again
    # what it had released after its checkpoint mark (the same events, made again)
    resumed: bool = False
    resend: list[RecordBlock] = field(default_factory=list)
    # a shard's stream: where its seqs start, and its part of the stream's max_events
    first_seq: int = 0
    max_events: int | None = None

    @property
    def name(self) -> str:
        return self.plan.event_type

    @property
    def driven(self) -> bool:
        return self.lane.driven

    def target_rate(self) -> float:
        """Events/s the stream should release now (a rate change applies at the next slice,
        and shows at once)."""
        lane = self.lane
        profile = self.new_profile if self.new_profile is not None else lane.profile
        return float(profile.rate(self.clock.now(), lane.t0)) * lane.pack.shard_share


@dataclass(eq=False)
class RunHandle:
    """What the stream loops need of their run."""

    driver: Driver
    engine: EngineSection
    stop: asyncio.Event
    running: asyncio.Event
    streams: Callable[[], list[StreamRuntime]]
    # labels to ground truth, chaos (unless False), hand to the sinks: (stream, slice, end seq)
    emit: Callable[[StreamRuntime, RecordBlock, int, bool], Awaitable[None]]
    on_released: Callable[[StreamRuntime, int], None]  # metrics
    on_skipped: Callable[[StreamRuntime, int], None]


async def run_paced(s: StreamRuntime, run: RunHandle) -> None:
    eng, clock, lane, driver = run.engine, s.clock, s.lane, run.driver
    a = lane.at_us if s.resumed and lane.at_us is not None else s.start_us
    try:
        await _send_again(s, run)
        while not run.stop.is_set() and not s.removed:
            if not run.running.is_set():
                await run.running.wait()
                # paused, it earned nothing: what it had earned by the pause goes on from now
                since, now = max(a, s.paused_at_us), clock.now_us()
                if now > since:
                    driver.skip(s.name, since, now)
                    a = now
                continue
            if s.end_us is not None and a >= s.end_us:
                break
            limit = None if s.max_events is None else s.max_events - (lane.seq - s.first_seq)
            if limit is not None and limit <= 0:
                break
            if s.new_profile is not None:
                # a stream behind its old rate owes at most CATCH_UP of its new one: a
                # lower rate applies at once, not after the old rate's backlog
                owe = None if clock.simulated else CATCH_UP
                lost = driver.set_profile(s.name, s.new_profile, a, owe)
                s.new_profile = None
                if lost:
                    s.skipped += lost
                    run.on_skipped(s, lost)
            rate = max(s.target_rate(), 1e-9)
            if clock.simulated:  # about batch_max events (made while the last are encoded)
                step = min(max(eng.batch_max / rate, SIMULATED_SLICE_MIN), SIMULATED_SLICE_MAX)
            else:
                now_us = clock.now_us()
                # behind since its next event was due (a rate it could not keep up with
                # leaves earned events behind even while its slices keep time)
                owed = min(a, driver.owed_since(s.name, now_us))
                if now_us - owed > CATCH_UP * 1e6:  # what it cannot make up is skipped
                    to = now_us - round(CATCH_UP * 1e6)
                    lost = driver.skip(s.name, owed, to)
                    s.skipped += lost
                    run.on_skipped(s, lost)
                    a = max(a, to)
                behind = min(clock.now() - a / 1e6, CATCH_UP)
                # catching up: bigger slices; and never much over batch_max events in one
                # (made while the last are encoded)
                step = max(eng.pacing_interval, min(behind, eng.batch_max / rate))
                step = min(step, max(eng.batch_max / rate, SIMULATED_SLICE_MIN))
            b = a + round(step * 1e6)
            if s.end_us is not None:
                b = min(b, s.end_us)
            wait = (b - clock.now_us()) / 1e6
            if wait > 0:  # not due yet: wait, then look again (paused, stopped, rate change)
                await clock.sleep(wait if clock.simulated else min(wait, WALL_POLL))
                continue
            n_guess = int(rate * step) + 1
            last = s.end_us is not None and b >= s.end_us  # the run ends with this slice
            blocks = await off_loop(n_guess, driver.paced, s.name, a, b, limit, last, True)
            for block in blocks:
                n = len(block)
                s.generated += n
                s.released += n
                run.on_released(s, n)
                await run.emit(s, block, int(block.seq[-1]) + 1, True)
            a = b
            # a driven stream may release up to here: the slice's end, or the last event if
            # max_events ended the stream inside the slice; the run's last slice holds what
            # was due after its end at the end itself, so up to and including it
            cut = limit is not None and sum(map(len, blocks)) >= limit
            until = int(blocks[-1].event_time[-1]) if cut else b if last else b - 1
            # made, due, not released yet: the next slice's (none after the last)
            nxt = None if last else driver.next_time(s.name)
            s.released_until_us = min(until, nxt - 1) if nxt is not None else until
            _wake_driven(s, run)
        # what chaos still holds back (delays) goes out now, late as it is
        rest = s.chaos.flush() if s.chaos is not None else None
        if rest is not None and len(rest):
            await run.emit(s, rest, lane.seq, False)
    finally:
        s.done = True
        _wake_driven(s, run)


async def _send_again(s: StreamRuntime, run: RunHandle) -> None:
    """A restarted stream: what it released after its mark before the restart, again."""
    again, s.resend = s.resend, []
    for block in again:
        await run.emit(s, block, int(block.seq[-1]) + 1, True)


def _wake_driven(s: StreamRuntime, run: RunHandle) -> None:
    for x in run.streams():
        if x.driven and x.pack is s.pack and not x.removed:
            x.wake.set()


async def run_driven(s: StreamRuntime, run: RunHandle) -> None:
    """Release what the pack's simulation made, in event-time order, up to the time every paced
    stream of the pack has reached; when they are all done, what is due by the last of them,
    then end (later events have not happened yet)."""
    batch_max = run.engine.batch_max
    limit_total = s.max_events
    clock, driver = s.clock, run.driver
    try:
        await _send_again(s, run)
        while not s.removed:
            if not run.running.is_set():
                await run.running.wait()
            s.wake.clear()  # a release from now on wakes us, even during the poll
            sources = [x for x in run.streams() if x.pack is s.pack and not x.driven]
            live = [x for x in sources if not x.done]
            by_clock = not sources and type(s.pack).driven_follow_clock()
            ended = by_clock and s.end_us is not None and clock.now_us() >= s.end_us
            if by_clock:  # the pack's own time: up to now (the run's end at the latest)
                until = clock.now_us()
                if s.end_us is not None:
                    until = min(until, s.end_us)
            else:
                until = (
                    min(x.released_until_us for x in live)
                    if live
                    else max((x.released_until_us for x in sources), default=0)
                )
            final = ended if by_clock else not live
            limit = batch_max
            if limit_total is not None:
                limit = min(limit, limit_total - (s.lane.seq - s.first_seq))
                if limit <= 0:
                    break
            block = await asyncio.to_thread(driver.poll, s.name, until, limit, final)
            if block is not None:
                n = len(block)
                s.generated += n
                s.released += n
                run.on_released(s, n)
                s.released_until_us = until if by_clock else int(block.event_time[-1])
                await run.emit(s, block, s.lane.seq, True)
                continue  # there may be more due already
            if by_clock:
                s.released_until_us = until
                if ended:
                    break
                # let time pass: a simulated clock jumps a step, the wall clock is awaited
                if clock.simulated:
                    await clock.sleep(CLOCK_DRIVEN_STEP)
                else:
                    await asyncio.sleep(CLOCK_DRIVEN_POLL)
                continue
            if not live:
                break  # every source ended and nothing more is due
            await s.wake.wait()
        rest = s.chaos.flush() if s.chaos is not None else None
        if rest is not None and len(rest):
            await run.emit(s, rest, s.lane.seq, False)
    finally:
        s.done = True
