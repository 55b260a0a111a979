"""A run releases exactly what its rate profile earns over its window: floor(R(end) - R(start)),
whatever the rate, the profile, ``block_size`` or ``batch_max``; simulated or wall clock."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from datafactory.config import parse_config
from datafactory.encoders.base import EncodedBatch
from datafactory.runtime.engine import Engine
from datafactory.sinks.base import Sink, SinkContext

STREAM = "retail.pos_transaction"
CONFIG = """
run: {{name: exact, seed: 9, clock: {clock}, start: 2026-05-01T03:00:00Z, duration: {duration}}}
packs:
  retail:
    params: {{stores: 5, skus: 200, customers: 500}}
    streams:
      pos_transaction: {{rate: {rate}}}
sinks:
  out: {{type: stdout}}
engine: {{block_size: {block}, batch_max: {batch_max}, pacing_interval: 50ms}}
telemetry: {{enabled: false}}
"""


class Counting(Sink):
    """Keeps the seqs it was given (no I/O)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.seqs: list[int] = []

    async def connect(self) -> None:
        pass

    async def write_batch(self, batch: EncodedBatch) -> None:
        self.seqs += batch.seqs().tolist()

    async def close(self) -> None:
        pass


class InstantWallClock:
    """A wall clock (the stream-mode path: pacing slices, short sleeps) whose sleeps take no
    real time, so a long window runs in a unit test."""

    simulated = False

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def now_us(self) -> int:
        return round(self._now * 1_000_000)

    async def sleep(self, seconds: float) -> None:
        self._now += max(seconds, 1e-6)
        await asyncio.sleep(0)


def profile(kind: str, rate: float) -> str:
    if kind == "constant":
        return f"{{profile: constant, base: {rate}}}"
    if kind == "ramp":
        return f"{{profile: ramp, start: {rate / 4}, end: {rate}, duration: 5m, delay: 30s}}"
    return f"{{profile: diurnal, base: {rate}, amplitude: 0.6, period: 20m}}"


async def released(
    kind: str, rate: float, seconds: int, block: int, batch_max: int, clock: str = "simulated"
) -> tuple[int, int, list[int]]:
    text = CONFIG.format(
        clock=clock,
        duration=f"{seconds}s",
        rate=profile(kind, rate),
        block=block,
        batch_max=batch_max,
    )
    cfg = parse_config(text)
    sinks: list[Counting] = []

    def factory(name: str, c: Any, ctx: SinkContext) -> Sink:
        sinks.append(Counting(name, c, ctx))
        return sinks[0]

    t0 = cfg.run.start_epoch()
    wall = InstantWallClock(t0) if clock == "wall" else None
    summary = await Engine(cfg, sink_factory=factory, wall_clock=wall).run()
    rt = cfg.streams[0].rate
    want = math.floor(rt.cumulative(t0 + seconds, t0) + 1e-6)
    return summary["streams"][STREAM]["released"], want, sinks[0].seqs


# (rate, window): windows long enough for several blocks and slices at every rate
GRID = [(1, 3 * 3600), (20, 1200), (500, 600), (20_000, 30)]


@pytest.mark.parametrize(("rate", "seconds"), GRID)
@pytest.mark.parametrize("kind", ["constant", "ramp", "diurnal"])
async def test_a_simulated_run_releases_what_its_profile_earns(
    rate: int, seconds: int, kind: str
) -> None:
    got, want, seqs = await released(kind, rate, seconds, block=8192, batch_max=16384)
    assert got == want
    assert seqs == list(range(want))  # delivered, in order, no gap


@pytest.mark.parametrize(("block", "batch_max"), [(16, 7), (1000, 16384), (100_000, 333)])
@pytest.mark.parametrize(("rate", "seconds"), [(20, 1200), (500, 120)])
async def test_block_size_and_batch_max_do_not_change_the_count(
    block: int, batch_max: int, rate: int, seconds: int
) -> None:
    got, want, _ = await released("constant", rate, seconds, block, batch_max)
    assert got == want


@pytest.mark.parametrize(("rate", "seconds"), [(1, 600), (20, 300), (500, 60), (20_000, 5)])
@pytest.mark.parametrize("kind", ["constant", "diurnal"])
async def test_a_wall_clock_run_stopped_by_duration_releases_what_it_earned(
    rate: int, seconds: int, kind: str
) -> None:
    got, want, seqs = await released(kind, rate, seconds, 8192, 16384, clock="wall")
    assert got == want
    assert seqs == list(range(want))


async def test_a_pause_earns_nothing_and_resuming_does_not_burst() -> None:
    """20 s at 100 events/s with 10 s paused: 1,000 events, none made up for the pause."""
    cfg = parse_config(
        CONFIG.format(
            clock="wall",
            duration="20s",
            rate=profile("constant", 100),
            block=8192,
            batch_max=16384,
        )
    )
    clock = InstantWallClock(cfg.run.start_epoch())
    engine = Engine(cfg, sink_factory=lambda n, c, x: Counting(n, c, x), wall_clock=clock)
    task = asyncio.create_task(engine.run())
    while engine.snapshot()["streams"][STREAM]["released"] < 500:
        await asyncio.sleep(0)
    engine.pause()
    for _ in range(20):
        await asyncio.sleep(0)
    released = engine.snapshot()["streams"][STREAM]["released"]
    clock._now += 10.0  # ten seconds pass while paused
    for _ in range(20):
        await asyncio.sleep(0)
    assert engine.snapshot()["streams"][STREAM]["released"] == released  # nothing while paused
    engine.resume()
    summary = await task
    assert summary["streams"][STREAM]["released"] == 1000
