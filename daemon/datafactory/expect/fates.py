"""What chaos did to each event, as a platform sees it (from the run's manifest).

A correct platform counts each event it could have counted once: it never saw a *dropped*
one, it rejects a *rejected* one (a corrupt value or bytes, a drifted schema, a poison pill:
the steps :data:`datafactory.verify.reconcile.REJECTABLE` names) to its dead-letter queue, and
it counts a *duplicated* one once, however many copies came. Each of these is also how a
platform's numbers go wrong (a dropped event it cannot help; a rejected one it counted; a
duplicate it counted twice), so ``expect`` answers over each fate apart, event by event, and
``verify --expected`` explains a wrong window with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.engine.blocks import RecordBlock
from datafactory.verify.reconcile import REJECTABLE, Truth

DROPPED, REJECTED, DUPLICATED = "dropped", "rejected", "duplicated"
FATES = (DROPPED, REJECTED, DUPLICATED)
# under a lateness policy (``expect --watermark-lag/--allowed-lateness``): dropped by it, and
# come after the watermark but within the allowed lateness (counted)
LATE, LAGGING = "late", "lagging"
I64 = npt.NDArray[np.int64]


class Fates:
    """Per stream: the seqs each fate befell (sorted), and each duplicate's extra copies."""

    def __init__(self, truth: Truth) -> None:
        self.truth = truth
        by: dict[str, dict[str, set[int]]] = {}
        for (stream, seq), hits in truth.faults.items():
            steps = {step for step, _ in hits}
            fate = DROPPED if "drop" in steps else REJECTED if steps & REJECTABLE else None
            if fate is not None:
                by.setdefault(stream, {}).setdefault(fate, set()).add(seq)
        self.seqs = {
            stream: {f: np.array(sorted(s), dtype=np.int64) for f, s in fates.items()}
            for stream, fates in by.items()
        }
        self.copies = _by_stream(truth.duplicates)  # extra copies
        self.delays = _by_stream(truth.delays, 1000)  # how late, µs

    def split(self, block: RecordBlock) -> dict[str, Any]:
        """Rows of ``block`` by fate: ``kept`` (what a correct platform counts), and the rows
        each fate befell (``duplicated``: a row per extra copy)."""
        seq = block.seq
        fates = self.seqs.get(block.stream, {})
        hit = {f: np.isin(seq, s) for f, s in fates.items()}
        gone = np.zeros(len(seq), dtype=np.bool_)
        for f in (DROPPED, REJECTED):
            if f in hit:
                hit[f] &= ~gone  # dropped first: a dropped event was never there to reject
                gone |= hit[f]
        out: dict[str, Any] = {"kept": np.flatnonzero(~gone)}
        if block.stream in self.delays:  # how late chaos delivered each row (µs)
            out["delay_us"] = _lookup(self.delays[block.stream], seq)
        for f, mask in hit.items():
            out[f] = np.flatnonzero(mask)
        if block.stream in self.copies:
            copies = np.where(gone, 0, _lookup(self.copies[block.stream], seq))
            out[DUPLICATED] = np.repeat(np.arange(len(seq)), copies)
        return out


def _by_stream(values: Mapping[tuple[str, int], int], scale: int = 1) -> dict[str, Any]:
    """(stream, seq) -> value, as per stream: (its seqs sorted, their values x ``scale``)."""
    lists: dict[str, list[tuple[int, int]]] = {}
    for (stream, seq), v in values.items():
        lists.setdefault(stream, []).append((seq, v))
    return {
        stream: (np.array([q for q, _ in v], dtype=np.int64),
                 np.array([x * scale for _, x in v], dtype=np.int64))
        for stream, v in ((s, sorted(v)) for s, v in lists.items())
    }  # fmt: skip


def _lookup(table: tuple[I64, I64], seq: I64) -> I64:
    """Each seq's value in a stream's (seqs, values); 0 where it has none."""
    seqs, values = table
    at = np.minimum(np.searchsorted(seqs, seq), len(seqs) - 1)
    out: I64 = np.where(seqs[at] == seq, values[at], 0)
    return out
