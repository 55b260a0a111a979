"""The behaviour-pack contract and the entry-point registry.

A pack is a domain (``retail``, ``iot``, ``healthcare``) with a typed ``Params`` model, a set
of streams, and entity state that evolves over (wall or simulated) time. Streams of one pack
share that state, so what they emit is referentially consistent.

Packs register under the entry-point group ``datafactory.packs``; sinks under
``datafactory.sinks``. Both are loaded the way Hypothesis loads plugins.
"""

from __future__ import annotations

import functools
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from datafactory.engine.blocks import RecordBlock
from datafactory.engine.rate import RateProfile
from datafactory.engine.seeding import SeedTree
from datafactory.schema import EventSchema, load_schema

if TYPE_CHECKING:
    from datafactory.expect.questions import Question


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a pack declares about one of its streams."""

    name: str
    description: str
    default_rate: RateProfile | None = None
    # driven: events the pack's simulation makes (from what its paced streams released, or
    # from the passing of time), released in event-time order, with no rate of their own
    driven: bool = False

    def event_type(self, pack: str) -> str:
        return f"{pack}.{self.name}"


class StreamGenerator(ABC):
    """Makes blocks of one stream. ``generate`` is called with the pack's lock held."""

    schema: EventSchema

    def generate(self, seq_start: int, event_time: npt.NDArray[np.int64]) -> RecordBlock:
        """Paced streams: one event per ``event_time`` (epoch µs, non-decreasing), with seqs
        from ``seq_start``, made as of when each happens (the driver's plan: these are the
        events' real times). Advances the pack's state to the last of them."""
        raise NotImplementedError(f"{type(self).__name__} is driven: it has no generate()")

    def released(self, block: RecordBlock) -> None:  # noqa: B027 - optional hook
        """Paced streams: ``block`` (just generated) is released (pack lock held). Packs
        derive the events of their driven streams from it."""

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        """Driven streams: at most ``limit`` pending events with ``event_time <= until_us``
        (the time every paced stream of the pack has reached), in time order, with seq from
        ``seq_start``. ``final``: the paced streams have ended; release what happened by
        ``until_us`` even where the pack's own day is not complete. None or an empty block:
        nothing is due yet. (Pack lock held.)"""
        raise NotImplementedError(f"{type(self).__name__} is paced: it has no poll()")


SEQ_SHARD_BITS = 40  # a shard has 2**40 seqs per stream


@dataclass(frozen=True, slots=True)
class Shard:
    """One of ``count`` independent parts of a pack's population (batch mode runs shards in
    parallel). Shard 0 of 1 is the whole population, exactly as stream mode builds it."""

    index: int = 0
    count: int = 1

    @property
    def seq_base(self) -> int:
        """Where this shard's seqs start (each stream's): its own part of the seq space, so
        event ids stay unique across shards; 0 for the whole population."""
        return self.index << SEQ_SHARD_BITS if self.count > 1 else 0

    def split(self, n: int) -> int:
        """This shard's part of a total ``n`` (a stream's ``max_events``): the parts add up."""
        lo, hi = self.range(n)
        return hi - lo

    @property
    def tag(self) -> tuple[str | int, ...]:
        """Seed-path suffix for a shard's own entities: empty for the whole population, so
        one shard gives the data a stream run gives."""
        return () if self.count == 1 else ("shard", self.index)

    def range(self, n: int) -> tuple[int, int]:
        """This shard's slice ``[lo, hi)`` of ``n`` entities (as even as can be)."""
        return self.index * n // self.count, (self.index + 1) * n // self.count


class Pack(ABC):
    """A behaviour pack instance: its entities are built once per run from params + seeds.

    ``shard``: packs that can split their population (``shardable``) build only their part;
    entity ids stay unique across shards and shared things (a catalogue) stay identical.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    streams: ClassVar[dict[str, StreamSpec]]
    # every stream driven, following the clock: ``poll(until=now)`` (a simulated clock moves
    # in steps; the run's duration or max_events ends it)
    clock_driven: ClassVar[bool] = False
    # can build one shard of its population (batch mode's parallel partitions)
    shardable: ClassVar[bool] = False

    def __init__(self, params: BaseModel, seeds: SeedTree, shard: Shard | None = None) -> None:
        self.params = params
        self.seeds = seeds
        self.shard = shard or Shard()
        if self.shard.count > 1 and not self.shardable:
            raise ValueError(f"pack {self.name} cannot be split into shards")
        # this shard's share of the pack's activity: paced rates are scaled by it
        self.shard_share = 1.0
        # streams of one pack share entity state; generation runs in worker threads
        self.lock = threading.Lock()

    # a pack's state pickles (batch mode's checkpoints and its hand-over to a stream run);
    # the lock is the one thing that does not
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    @abstractmethod
    def stream(self, name: str) -> StreamGenerator:
        """The generator for one of ``streams``."""

    def advance(self, now_us: int) -> None:  # noqa: B027 - optional hook
        """Time-driven state up to ``now_us`` (packs that step their own models at the
        generation edge). Batch mode calls it at the end of the window, so the window's last
        day is complete in the history."""

    def begin(self, now_us: int) -> None:  # noqa: B027 - optional hook
        """A stream run starts at ``now_us``: models that begin with the run (opening stock,
        a catalogue, devices registering) begin here if they have not yet (a pack going on
        from a journal or a batch's history already has). Called by the driver when a stream
        starts, before its first event."""

    @classmethod
    def driven_follow_clock(cls) -> bool:
        """Whether its driven streams follow the clock when none of its paced streams runs
        (clock-driven packs; templates' state-machine streams)."""
        return cls.clock_driven

    @classmethod
    def questions(cls, params: BaseModel) -> tuple[Question, ...]:
        """What a platform answers about its streams (revenue per store per hour...):
        ``datafactory expect`` computes the right answers (see :mod:`datafactory.expect`)."""
        return ()

    @classmethod
    def max_shards(cls, params: BaseModel) -> int:
        """How many shards the population can be split into (1: it cannot)."""
        return 1

    @classmethod
    def default_rate(cls, stream: str, params: BaseModel | None) -> RateProfile | None:
        """A stream's rate when its config gives none: the spec's, unless a pack shapes it by
        its params (``params`` is None when they were invalid)."""
        return cls.streams[stream].default_rate

    @classmethod
    def schema_for(cls, stream: str) -> EventSchema:
        return load_schema(f"{cls.name}.{stream}")

    # packs whose streams their params declare (templates) override these two; the others
    # have the streams and shipped schemas of their class
    @classmethod
    def streams_for(cls, params: BaseModel | None) -> dict[str, StreamSpec]:
        """The pack's streams under ``params`` (None: the params were invalid)."""
        return cls.streams

    @classmethod
    def schema_of(cls, stream: str, params: BaseModel | None) -> EventSchema:
        """The schema of one of :meth:`streams_for`'s streams."""
        return cls.schema_for(stream)


@functools.cache
def _load(group: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        found[ep.name] = ep.load()
    return found


def registered_packs() -> dict[str, type[Pack]]:
    return dict(_load("datafactory.packs"))


def registered_sinks() -> dict[str, Any]:
    return dict(_load("datafactory.sinks"))
