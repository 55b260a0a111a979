"""One shard's history, day by day: the packs' behaviour run over simulated time, no pacing.

Driven by the same driver as stream mode (:mod:`datafactory.runtime.drive`), an hour's slice
at a time: paced streams get the events their rate profile earns (scaled by the shard's share
of the population) at their own times; driven streams release what is due. Nothing here waits
or does I/O.

With one shard, the entities are stream mode's (same seed paths); with more, each shard is
an independent part of the population (see :class:`datafactory.pack.Shard`) and its seqs
start at ``shard << SEQ_SHARD_BITS``, so event ids stay unique across shards.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datafactory import __version__
from datafactory.chaos.base import FaultLog
from datafactory.config import Config
from datafactory.engine.blocks import RecordBlock
from datafactory.engine.seeding import SeedTree
from datafactory.pack import Pack, Shard, registered_packs
from datafactory.runtime.drive import Driver
from datafactory.states import StateError, check_location, seal, unseal

__all__ = ["StateError", "load_run_state", "load_state"]

DAY_US = 86_400_000_000
SLICE_US = 3_600_000_000  # paced streams advance an hour at a time (at most)


@dataclass
class Chunk:
    """One shard's day ``[start_us, end_us)``: its blocks come as they are simulated
    (:meth:`ShardSimulation.chunks` sets ``blocks``; read them all, in order, before the
    next day)."""

    index: int
    start_us: int
    end_us: int
    blocks: Iterator[RecordBlock] = field(default_factory=lambda: iter(()))
    # the packs' labelled records (domain errors, incidents), as the engine hands them to
    # the chaos manifest: complete once ``blocks`` is exhausted
    labels: FaultLog = field(default_factory=FaultLog)
    rows: int = 0  # so far
    done_us: int = 0  # simulated through (a slice at a time): later blocks' paced events
    # come after it


def day_chunks(start_us: int, end_us: int) -> list[tuple[int, int]]:
    """The window cut at UTC midnights (the first and last days may be partial)."""
    out, t = [], start_us
    while t < end_us:
        nxt = min((t // DAY_US + 1) * DAY_US, end_us)
        out.append((t, nxt))
        t = nxt
    return out


class ShardSimulation:
    def __init__(self, config: Config, shard: Shard, start_us: int, end_us: int) -> None:
        self.config = config
        self.shard = shard
        self.start_us, self.end_us = start_us, end_us
        seeds = SeedTree(config.run.seed)
        packs = registered_packs()
        self.packs: dict[str, Pack] = {
            name: packs[name](config.pack_params[name], seeds, shard)
            for name in dict.fromkeys(p.pack for p in config.streams)
        }
        self._drive(config.model.engine.block_size)
        for pack in self.packs.values():  # the packs' models begin with the window, as a
            pack.begin(start_us)  # stream run's begin with the run (not at the first poll)

    def _drive(self, block_size: int, carried: dict[str, Any] | None = None) -> None:
        """The driver over this shard's packs (``carried``: generators, seqs and counts of a
        saved state); rate profiles start at the window's start."""
        base = self.shard.seq_base
        self.driver = Driver(self.packs, block_size)
        for plan in self.config.streams:
            lane = (carried or {}).get(plan.event_type)
            self.driver.add(plan, t0=self.start_us / 1e6, seq=base, carried=lane)

    def chunks(self, first: int = 0) -> Iterator[Chunk]:
        """Day after day, in order (state carries from one to the next), from day ``first``
        (the state must then be the one at its start: see :meth:`restore`). Memory is a
        generated block's, whatever the day's volume."""
        days = day_chunks(self.start_us, self.end_us)
        for i, (a, b) in enumerate(days):
            if i < first:
                continue
            chunk = Chunk(i, a, b, done_us=a)
            chunk.blocks = self._day(chunk, last=i == len(days) - 1)
            yield chunk
            for _ in chunk.blocks:  # a day the caller skipped is still simulated
                pass

    def _day(self, chunk: Chunk, last: bool) -> Iterator[RecordBlock]:
        t, b = chunk.start_us, chunk.end_us
        while t < b:
            nxt = min(t + SLICE_US, b)
            # the end: the packs' days done, what happened by it (what happens at the end
            # stays pending in the state, for a run that continues)
            for block in self.driver.step(t, nxt, final=last and nxt == b):
                if block.labels:
                    chunk.labels.add_labels(block.stream.partition(".")[0], block)
                    block.labels = ()
                chunk.rows += len(block)
                yield block
            t = chunk.done_us = nxt

    # -- state: checkpoints and the hand-over to a stream run ---------------------------------

    def identity(self) -> dict[str, Any]:
        return {**state_identity(self.config), "shard": [self.shard.index, self.shard.count]}

    def state(self, chunk: Chunk) -> bytes:
        """Everything the simulation holds after ``chunk`` (packs, generators, seqs), sealed
        (:mod:`datafactory.states`). Valid for this version of datafactory only."""
        lanes = self.driver.lanes
        return seal(
            {
                "version": code_version(),
                "identity": self.identity(),
                "next_chunk": chunk.index + 1,
                "time_us": chunk.end_us,
                "packs": self.packs,
                "streams": {name: lane.carry() for name, lane in lanes.items()},
            }
        )

    def restore(self, data: bytes) -> int:
        """Continue from a :meth:`state`; returns the day to go on from."""
        state = load_state(data, self.identity())
        self.packs = state["packs"]
        self._drive(self.config.model.engine.block_size, state["streams"])
        return int(state["next_chunk"])


@functools.cache
def code_version() -> str:
    """The release and a digest of the installed code: a pickled state holds our classes'
    attributes, so only the very same code may load it."""
    h = hashlib.sha256()
    roots = [Path(__file__).resolve().parent.parent]  # the engine, then every pack's package
    roots += [Path(inspect.getfile(cls)).resolve().parent for cls in registered_packs().values()]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(f"{root.name}/{path.relative_to(root)}".encode())
            h.update(path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def state_identity(config: Config) -> dict[str, Any]:
    """What a state belongs to: it only continues the same packs' params and seed (streams
    and their rates may differ: "now" need not sell at history's rate)."""
    packs = config.model.model_dump(mode="json")["packs"]
    return {"packs": {p: sec["params"] for p, sec in packs.items()}, "seed": config.run.seed}


def load_state(
    data: bytes, identity: dict[str, Any] | None = None, where: str = "the state"
) -> dict[str, Any]:
    """A sealed simulation state, checked: this installation's key (before anything is
    unpickled), this build of the code, this config's packs and seed."""
    state = unseal(data, where)
    if not isinstance(state, dict) or state.get("version") != code_version():
        found = state.get("version") if isinstance(state, dict) else "?"
        raise StateError(
            f"the state was written by another datafactory build ({found}; this is "
            f"{code_version()}): states only continue the code that made them"
        )
    if identity is not None:
        theirs = state["identity"]
        for key in ("packs", "seed"):
            if theirs[key] != identity[key]:
                raise StateError(f"the state was made with other {key} than this config's")
    return state


async def load_run_state(config: Config, allowed: list[str] | None = None) -> dict[str, Any] | None:
    """The state ``run.from_state`` names, checked against the config (None without one).
    ``allowed``: where states may be read from (None: anywhere; the CLI's operator)."""
    where = config.run.from_state
    if where is None:
        return None
    try:
        check_location(where, allowed)
    except StateError as e:
        raise StateError(f"run.from_state: {e}") from None
    if where.startswith("s3://"):
        from datafactory.batch.targets import S3Target

        bucket, _, key = where[5:].partition("/")
        target = S3Target(f"s3://{bucket}/", 5 * 1024**2, None, "us-east-1")
        await target.open()
        try:
            data = await target.read(key)
        finally:
            await target.close()
        if data is None:
            raise StateError(f"run.from_state: no object {where}")
    else:
        try:
            data = await asyncio.to_thread(Path(where).read_bytes)
        except OSError as e:
            raise StateError(f"run.from_state: cannot read {where}: {e.strerror}") from None
    try:
        return load_state(data, state_identity(config), "the file")
    except StateError as e:
        raise StateError(f"run.from_state {where}: {e}") from None
