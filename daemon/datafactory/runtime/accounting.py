"""Accounting: which released events every sink is done with, and the checkpoint mark.

A stream releases *slices* (consecutive seqs, after chaos) and hands each to all of its sinks.
A sink is done with a slice once it acknowledged, failed for good, or shed every event of it.
The *mark* is the seq below which every event is done for every sink (and its faults written
down): what a restart resumes from. The counts of exactly those slices (``at_mark``) go to the
ledger with the mark, so the counters and the checkpoint always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# what a sink did with the events of a slice, in this order
OUTCOMES = ("acked", "failed", "retried", "shed")


@dataclass(slots=True)
class Outcome:
    """What one sink did with (part of) a stream's events."""

    acked: int = 0
    failed: int = 0
    retried: int = 0
    shed: int = 0

    def add(self, other: Outcome) -> None:
        self.acked += other.acked
        self.failed += other.failed
        self.retried += other.retried
        self.shed += other.shed

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in OUTCOMES}


@dataclass(slots=True)
class _Slice:
    sid: int
    sinks_left: int
    end_seq: int
    low: int  # its lowest seq (lower than the slices before it's end: a delayed event)
    outcomes: dict[str, Outcome] = field(default_factory=dict)


class SliceBook:
    """One stream's slices in flight, in release order.

    A slice every sink is done with is *ready*; the mark moves past it only when nothing
    below its end is still to do: no later slice holds a lower seq (an event chaos delayed),
    the chain holds none back (``floor``), and, on a run with a manifest (``gated``), the
    manifest has written down every fault of it (``truth_written``). A restart from the
    mark then loses nothing: not a delayed event, not the record of a drop.
    """

    __slots__ = ("_gate", "_next", "_open", "_ready", "at_mark", "floor", "mark")

    def __init__(self, start: int = 0, gated: bool = False) -> None:
        self.mark = start
        self._open: dict[int, _Slice] = {}
        self._ready: list[_Slice] = []
        self._next = 0
        # slices below this id have their faults in the manifest (None: no manifest)
        self._gate: int | None = 0 if gated else None
        # the lowest seq the stream's chaos chain still holds back (None: none)
        self.floor: int | None = None
        # per sink: what it did with the events below the mark
        self.at_mark: dict[str, Outcome] = {}

    def open(self, end_seq: int, sinks: int, low: int | None = None) -> int:
        """A slice whose last seq is ``end_seq - 1`` (and lowest ``low``) goes to ``sinks``
        sinks; its id."""
        sid = self._next
        self._next += 1
        self._open[sid] = _Slice(sid, sinks, end_seq, end_seq - 1 if low is None else low)
        if sinks == 0:
            self._advance()
        return sid

    def done(self, sid: int, sink: str, outcome: Outcome) -> None:
        """``sink`` is done with slice ``sid``; moves the mark past every finished slice."""
        entry = self._open.get(sid)
        if entry is None:
            return
        entry.sinks_left -= 1
        entry.outcomes[sink] = outcome
        self._advance()

    def hold(self, floor: int | None) -> None:
        """The chain now holds back nothing below ``floor`` (None: nothing at all)."""
        self.floor = floor
        self._commit()

    def truth_barrier(self) -> int:
        """For the manifest, before it takes its pending faults: the faults of every slice
        below the first open one are among them (each was added before its sinks were
        done)."""
        return self._first_open()

    def truth_written(self, barrier: int) -> None:
        """The manifest wrote what it held at ``barrier``."""
        if self._gate is not None and barrier > self._gate:
            self._gate = barrier
            self._commit()

    @property
    def in_flight(self) -> int:
        return len(self._open) + len(self._ready)

    def _first_open(self) -> int:
        return next(iter(self._open)) if self._open else self._next

    def _advance(self) -> None:
        while self._open:
            first = next(iter(self._open))
            entry = self._open[first]
            if entry.sinks_left > 0:
                break
            del self._open[first]
            self._ready.append(entry)
        self._commit()

    def _commit(self) -> None:
        if not self._ready:
            return
        # the lowest seq still to do after each ready slice: later slices and the chain
        low = min((e.low for e in self._open.values()), default=None)
        if self.floor is not None:
            low = self.floor if low is None else min(low, self.floor)
        upto = -1
        for i in range(len(self._ready) - 1, -1, -1):
            e = self._ready[i]
            if self._gate is not None and e.sid >= self._gate:
                low = e.low if low is None else min(low, e.low)
                continue
            if upto < 0 and (low is None or e.end_seq <= low):
                upto = i
            low = e.low if low is None else min(low, e.low)
        if upto < 0:
            return
        for e in self._ready[: upto + 1]:
            self.mark = max(self.mark, e.end_seq)
            for sink, outcome in e.outcomes.items():
                self.at_mark.setdefault(sink, Outcome()).add(outcome)
        del self._ready[: upto + 1]
