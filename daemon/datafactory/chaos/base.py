"""What every chaos step shares: its settings, its schedule, and seeded per-event decisions.

A step decides per event, not per block: ``u = splitmix64(seq ^ salt)`` mapped to [0, 1) is
compared with ``rate * schedule(event_time)``. The salt mixes the run seed, the stream and the
step's name, so a decision depends only on (seed, stream, step, seq): the same config and seed
break the same events however the pacer happened to slice them, and a live rate change moves
the threshold without reshuffling who is hit first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.encoders import fast
from datafactory.engine.blocks import Patch, RecordBlock, concat
from datafactory.engine.identity import splitmix64, stable_hash64
from datafactory.schema import EventSchema
from datafactory.units import Duration

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
_TO_UNIT = 1.0 / 2**53


class Schedule(BaseModel):
    """When a step is active, in time since the stream started (event time).

    Empty: always. ``from``/``to``: a window. ``every`` + ``for``: periodic windows (active
    ``for`` out of every ``every``, starting at ``from``). ``ramp``: the rate grows linearly
    from 0 to the step's rate over this long after ``from``.
    """

    model_config = _STRICT
    start: Duration | None = Field(
        None, alias="from", ge=0, description="active from", examples=["10m"]
    )
    to: Duration | None = Field(None, gt=0, description="active until", examples=["15m"])
    every: Duration | None = Field(None, gt=0, description="period of repeating windows")
    for_: Duration | None = Field(None, alias="for", gt=0, description="window length per period")
    ramp: Duration | None = Field(None, gt=0, description="rate rises from 0 over this long")

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if (self.every is None) != (self.for_ is None):
            raise ValueError("every and for go together (active `for` out of every `every`)")
        if self.every is not None and self.for_ is not None and self.for_ > self.every:
            raise ValueError("for must not be longer than every")
        if self.start is not None and self.to is not None and self.to <= self.start:
            raise ValueError("to must be after from")
        return self

    @property
    def always(self) -> bool:
        return self.start is None and self.to is None and self.every is None and self.ramp is None

    def factor(self, t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Per event (seconds since the stream started): how much of the rate applies."""
        start = self.start or 0.0
        out = (t >= start).astype(np.float64)
        if self.to is not None:
            out *= t < self.to
        if self.every is not None and self.for_ is not None:
            out *= np.mod(t - start, self.every) < self.for_
        if self.ramp is not None:
            out *= np.clip((t - start) / self.ramp, 0.0, 1.0)
        return out


class StepConfig(BaseModel):
    """Settings every step has; each step module extends it with its own."""

    model_config = _STRICT
    step: str = Field(description="which fault: drop, duplicate, delay, ...")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="unique name (metrics label, live changes); default: the step",
    )
    rate: float = Field(ge=0.0, le=1.0, description="share of events hit (0..1)")
    streams: list[str] | None = Field(
        None, description="event types (pack.stream) or stream names; default: all"
    )
    fields: list[str] | None = Field(None, description="fields it may touch; default: its pick")
    schedule: Schedule = Field(default_factory=Schedule, description="when it is active")


@dataclass(frozen=True, slots=True)
class RenderContext:
    """How a sink encodes: what a byte-level fault must produce bytes for."""

    format: str  # json | avro
    schema: EventSchema
    framed: bool  # Avro single-object framing (message sinks)
    max_record_bytes: int | None


class FaultLog:
    """Faults a chain call injected, columnar, for the manifest and the metrics."""

    def __init__(self) -> None:
        self.items: list[Fault] = []

    def add(
        self,
        step: Step,
        kind: str,
        block: RecordBlock,
        rows: npt.NDArray[np.intp],
        details: list[Any] | dict[str, Any] | None = None,
    ) -> None:
        if isinstance(details, dict):
            details = [details] * len(rows)
        if len(rows):
            self.items.append(
                Fault(
                    step.cfg.step,
                    step.name,
                    kind,
                    block.stream,
                    block.seq[rows],
                    block.event_time[rows],
                    details,
                )
            )

    def add_labels(self, pack: str, block: RecordBlock) -> None:
        """A pack's own domain errors (``block.labels``), as step ``domain``."""
        for label in block.labels:
            if len(label):
                self.items.append(
                    Fault(
                        "domain",
                        pack,
                        label.kind,
                        block.stream,
                        block.seq[label.rows],
                        block.event_time[label.rows],
                        label.details,
                    )
                )

    def count(self) -> int:
        return sum(len(f.seq) for f in self.items)


@dataclass(frozen=True, slots=True)
class Fault:
    """Events one step hit in one call, with one detail per event (or none)."""

    step: str
    name: str
    kind: str
    stream: str
    seq: npt.NDArray[np.int64]
    event_time: npt.NDArray[np.int64]
    details: list[Any] | None
    sink: str | None = None
    digests: list[str] | None = None


class Step:
    """One fault. ``apply`` works on whole blocks; byte-level steps also ``render`` bytes."""

    Config: ClassVar[type[StepConfig]] = StepConfig
    # kinds that a platform should reject (DLQ); others (drop, duplicate, delay, hot_key) are
    # transport behaviour verify checks by counting
    rejectable: ClassVar[bool] = True
    byte_level: ClassVar[bool] = False

    def __init__(self, cfg: StepConfig, stream: str, schema: EventSchema, run_seed: int) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.step
        self.stream = stream
        self.schema = schema
        self.rate = cfg.rate
        self.schedule = cfg.schedule
        self.t0_us = 0
        self.salt = np.uint64(stable_hash64(f"{run_seed}/{stream}/{self.name}"))

    def update(self, cfg: StepConfig) -> None:
        """A live change: rate and schedule (other settings need a new chain)."""
        self.cfg = cfg
        self.rate = cfg.rate
        self.schedule = cfg.schedule

    def hashes(self, seq: npt.NDArray[np.int64], lane: int = 0) -> npt.NDArray[np.uint64]:
        """Independent 64-bit draws per event; ``lane`` picks another independent draw."""
        salt = self.salt ^ np.uint64(lane * 0x632BE5AB)
        if fast.available():  # the same function in one call
            found = fast.NATIVE.mix(np.ascontiguousarray(seq, dtype=np.int64), int(salt))
            return np.frombuffer(found, dtype=np.uint64)
        return splitmix64(seq.astype(np.uint64) ^ salt)

    def uniform(self, seq: npt.NDArray[np.int64], lane: int = 0) -> npt.NDArray[np.float64]:
        return (self.hashes(seq, lane) >> np.uint64(11)).astype(np.float64) * _TO_UNIT

    def choice(self, seq: npt.NDArray[np.int64], n: int, lane: int = 1) -> npt.NDArray[np.intp]:
        return (self.hashes(seq, lane) % np.uint64(max(n, 1))).astype(np.intp)

    def select(self, block: RecordBlock) -> npt.NDArray[np.intp]:
        """Rows this step hits in ``block``."""
        if self.rate <= 0.0 or not len(block):
            return np.empty(0, dtype=np.intp)
        if self.schedule.always and fast.available():
            # the same test as below (uniform(seq) < rate), without the temporaries
            seq = np.ascontiguousarray(block.seq, dtype=np.int64)
            found = fast.NATIVE.hits(seq, int(self.salt), self.rate * 2.0**53)
            rows = np.frombuffer(found, dtype=np.int64).astype(np.intp, copy=False)
        else:
            u = self.uniform(block.seq)
            if self.schedule.always:
                hit = u < self.rate
            else:
                t = (block.event_time - self.t0_us).astype(np.float64) / 1e6
                hit = u < self.rate * self.schedule.factor(t)
            rows = np.flatnonzero(hit)
        if self.byte_level and block.patches and len(rows):
            # one byte-level fault per record: a record already rewritten is left alone
            taken = np.zeros(len(block), dtype=np.bool_)
            for p in block.patches:
                taken[p.rows] = True
            rows = rows[~taken[rows]]
        return rows

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        """The block through this step (a step that only chooses rows: those rows)."""
        if not self.selects_rows:
            raise NotImplementedError
        idx = self.rows(block, log)
        return block if idx is None else block.take(idx)

    # steps that only choose rows (drop, duplicate right after): the chain composes their
    # choices and takes the rows once, instead of copying the whole block at each of them
    selects_rows: ClassVar[bool] = False

    def rows(self, block: RecordBlock, log: FaultLog) -> npt.NDArray[np.intp] | None:
        """The rows of ``block`` this step lets through, in order, repeats allowed (None: all,
        unchanged). It reads only ``seq``, ``event_time`` and ``key``."""
        raise NotImplementedError

    def due(self, now_us: int | None) -> RecordBlock | None:
        """What the step held back and releases now (all of it when ``now_us`` is None)."""
        return None

    def held(self) -> int:
        return 0

    def lowest_held(self) -> int | None:
        """The lowest seq held back (None: nothing is)."""
        return None

    # byte-level steps
    def render(
        self,
        clean: bytes,
        param: Any,
        ctx: RenderContext,
        fields: Sequence[int] | None = None,
    ) -> bytes:
        """``clean`` with this fault; ``fields`` (compiled encoders): where each top-level
        field starts in ``clean`` and where the last ends, for steps that edit a field."""
        raise NotImplementedError

    def rendered_kind(self, param: Any, ctx: RenderContext) -> str:
        """The fault a row's bytes really carry on this sink (for the manifest)."""
        return self.cfg.step

    def patch(
        self, block: RecordBlock, rows: npt.NDArray[np.intp], params: list[Any], kind: str
    ) -> RecordBlock:
        return block.with_patch(Patch(rows, params, self, kind))


class Holding:
    """Events a step holds back until their due time (event-time microseconds)."""

    def __init__(self) -> None:
        self.block: RecordBlock | None = None
        self.due_us = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.due_us)

    def add(self, block: RecordBlock, due_us: npt.NDArray[np.int64]) -> None:
        if not len(block):
            return
        self.block = block if self.block is None else concat([self.block, block])
        self.due_us = np.concatenate([self.due_us, due_us])

    def release(self, now_us: int | None) -> RecordBlock | None:
        if self.block is None or not len(self.due_us):
            return None
        if now_us is None:
            ready = np.ones(len(self.due_us), dtype=np.bool_)
        else:
            ready = self.due_us <= now_us
            if not ready.any():
                return None
        # in due order: what was delayed least among the ready goes first
        rows = np.flatnonzero(ready)
        rows = rows[np.argsort(self.due_us[rows], kind="stable")]
        out = self.block.take(rows)
        rest = np.flatnonzero(~ready)
        self.block = self.block.take(rest) if len(rest) else None
        self.due_us = self.due_us[rest]
        return out


class HoldingStep(Step):
    """A step that holds events back (delay, delayed duplicates) and releases them when due."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holding = Holding()

    def due(self, now_us: int | None) -> RecordBlock | None:
        return self.holding.release(now_us)

    def held(self) -> int:
        return len(self.holding)

    def lowest_held(self) -> int | None:
        b = self.holding.block
        return int(b.seq.min()) if b is not None and len(b) else None


def target_fields(
    schema: EventSchema, wanted: list[str] | None, pred: Any = None
) -> list[dict[str, Any]]:
    """Top-level fields a step may touch (never event_id: it names the event)."""
    out = [f for f in schema.fields if f["name"] != "event_id"]
    if wanted is not None:
        out = [f for f in out if f["name"] in wanted]
    if pred is not None:
        out = [f for f in out if pred(f)]
    return out
