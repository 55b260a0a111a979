"""Accounting: which released events every sink is done with, and the checkpoint mark.

A stream releases *slices* (consecutive seqs, after chaos) and hands each to all of its sinks.
A sink is done with a slice once it acknowledged, failed for good, or shed every event of it.
The *mark* is the seq below which every slice is done for every sink: what a restart resumes
from. The counts of exactly those slices (``at_mark``) go to the ledger with the mark, so the
counters and the checkpoint always agree.
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
    sinks_left: int
    end_seq: int
    outcomes: dict[str, Outcome] = field(default_factory=dict)


class SliceBook:
    """One stream's slices in flight, in release order."""

    __slots__ = ("_next", "_open", "at_mark", "mark")

    def __init__(self, start: int = 0) -> None:
        self.mark = start
        self._open: dict[int, _Slice] = {}
        self._next = 0
        # per sink: what it did with the events below the mark
        self.at_mark: dict[str, Outcome] = {}

    def open(self, end_seq: int, sinks: int) -> int:
        """A slice whose last seq is ``end_seq - 1`` goes to ``sinks`` sinks; its id."""
        sid = self._next
        self._next += 1
        self._open[sid] = _Slice(sinks, end_seq)
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

    @property
    def in_flight(self) -> int:
        return len(self._open)

    def _advance(self) -> None:
        while self._open:
            first = next(iter(self._open))
            entry = self._open[first]
            if entry.sinks_left > 0:
                break
            del self._open[first]
            self.mark = max(self.mark, entry.end_seq)
            for sink, outcome in entry.outcomes.items():
                self.at_mark.setdefault(sink, Outcome()).add(outcome)
