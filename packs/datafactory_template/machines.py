"""Per-member state machines of an entity, as numpy state over the whole population.

    entities:
      accounts:
        count: 10000
        fields: {account_id: {gen: pattern, pattern: "A{seq:07d}"}}
        states:
          initial: {active: 9, pending: 1}
          transitions:
            - {from: pending, to: active, per_day: 2}
            - {from: active, to: suspended, per_day: 0.01}
            - {from: suspended, to: active, per_day: 0.5}

Each member moves in continuous time: in a state it stays an exponential time at the sum of
its way-outs' rates, then takes one of them by its share (ShadowTraffic's ``fork`` +
``stateMachine``, for every member at once). A member's k-th move (its holding time and where
it goes) is a hash of (seed, entity, member, k), so the same moves come out however the clock
is polled, after a restart too. A stream with ``transitions: {entity: accounts}`` has an event
per move: ``from_state``, ``to_state``, then its own fields (``{gen: member, field: ...}`` gives
the moving member's fields).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.engine.identity import splitmix64
from datafactory.engine.timeline import PendingEvents

MAX_STATES = 100
MAX_MEMBERS_WITH_STATE = 10_000_000
DAY_US = 86_400_000_000
NEVER = np.iinfo(np.int64).max
_TO_UNIT = 1.0 / 2**53
I64 = npt.NDArray[np.int64]


class Transition(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )
    from_: str = Field(..., alias="from")
    to: str
    per_day: float = Field(..., gt=0, le=1_000_000, description="rate of this move, per day")


class StateMachine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    initial: str | dict[str, float] = Field(
        ..., description="the state every member starts in, or states with weights"
    )
    transitions: list[Transition] = Field(..., min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _states(self) -> StateMachine:
        names = self.states
        if len(names) > MAX_STATES:
            raise ValueError(f"at most {MAX_STATES} states")
        start = self.initial if isinstance(self.initial, dict) else {self.initial: 1.0}
        for name, w in start.items():
            if name not in names:
                raise ValueError(f"initial state {name!r} is in no transition")
            if w < 0 or not math.isfinite(w):
                raise ValueError(f"initial weight of {name!r} is finite and not negative")
        if not sum(start.values()):
            raise ValueError("initial weights are not all 0")
        pairs = [(t.from_, t.to) for t in self.transitions]
        if len(set(pairs)) != len(pairs):
            raise ValueError("a move (from, to) is given twice")
        if any(a == b for a, b in pairs):
            raise ValueError("a move goes from a state to the same state")
        return self

    @property
    def states(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        start = self.initial if isinstance(self.initial, dict) else {self.initial: 1.0}
        for name in start:
            seen[name] = None
        for t in self.transitions:
            seen[t.from_] = None
            seen[t.to] = None
        return tuple(seen)


class Machine:
    """The population's states, each member's next move, and the events of its moves."""

    def __init__(self, spec: StateMachine, count: int, salt: int, first: int = 0) -> None:
        """``count`` members from ``first`` (a shard's own: their ids, hashes and events are
        the population's ``first + i``)."""
        self.states = spec.states
        index = {s: i for i, s in enumerate(self.states)}
        n_states = len(self.states)
        rates = np.zeros((n_states, n_states))
        for t in spec.transitions:
            rates[index[t.from_], index[t.to]] = t.per_day / DAY_US  # per µs
        self.out_rate = rates.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.cdf = np.cumsum(rates, axis=1) / self.out_rate[:, None]
        start = spec.initial if isinstance(spec.initial, dict) else {spec.initial: 1.0}
        w = np.zeros(n_states)
        for name, x in start.items():
            w[index[name]] = x
        self.start_cdf = np.cumsum(w) / w.sum()
        self.count, self.first = count, first
        self.salt = np.uint64(salt)
        self.state: npt.NDArray[np.int16] | None = None
        self.next_us = np.zeros(0, dtype=np.int64)
        self.moves = np.zeros(0, dtype=np.int64)  # moves made so far, per member
        self.buffers: list[PendingEvents] = []  # one per stream that follows the moves
        self.t_us: int | None = None

    def _u(self, members: I64, k: I64, lane: int) -> npt.NDArray[np.float64]:
        """Draws of local members (their ids: ``first`` on)."""
        ids = (members + self.first).astype(np.uint64)
        key = (ids << np.uint64(20)) ^ k.astype(np.uint64)
        with np.errstate(over="ignore"):
            h = splitmix64(splitmix64(key ^ self.salt) ^ np.uint64(lane + 1))
        return (h >> np.uint64(11)).astype(np.float64) * _TO_UNIT

    def _hold(self, members: I64, state: npt.NDArray[Any], at: I64) -> I64:
        """When each member (now in ``state`` since ``at``) moves next (NEVER: it cannot)."""
        rate = self.out_rate[state]
        u = self._u(members, self.moves[members], lane=1)
        with np.errstate(divide="ignore"):
            wait = np.where(rate > 0, -np.log1p(-u) / np.where(rate > 0, rate, 1.0), np.inf)
        out = np.where(np.isfinite(wait), at + np.minimum(wait, 1e17).astype(np.int64), NEVER)
        return out.astype(np.int64)

    def begin(self, now_us: int) -> None:
        if self.t_us is not None:
            return
        members = np.arange(self.count, dtype=np.int64)
        self.moves = np.zeros(self.count, dtype=np.int64)
        u = self._u(members, np.full(self.count, -1, dtype=np.int64), lane=0)
        self.state = np.minimum(np.searchsorted(self.start_cdf, u, side="right"),
                                len(self.states) - 1).astype(np.int16)  # fmt: skip
        self.next_us = self._hold(members, self.state, np.full(self.count, now_us))
        self.t_us = now_us

    def advance(self, until_us: int) -> None:
        """Every move up to ``until_us``, in time order, to every buffer. A machine nobody
        began (a batch: its packs are not begun) begins at its first advance, as the packs'
        time-stepped models do."""
        if self.t_us is None:
            self.begin(until_us)
            return
        if self.state is None or until_us <= self.t_us:
            return
        while True:
            due = np.flatnonzero(self.next_us <= until_us)
            if not len(due):
                break
            t = self.next_us[due]
            before = self.state[due].astype(np.int64)
            u = self._u(due, self.moves[due], lane=2)
            after = np.minimum((self.cdf[before] <= u[:, None]).sum(axis=1), len(self.states) - 1)
            self.state[due] = after
            self.moves[due] += 1
            self.next_us[due] = self._hold(due, after, t)
            for buf in self.buffers:
                buf.add(t=t, member=due + self.first, before=before, after=after.astype(np.int64))
        self.t_us = until_us
