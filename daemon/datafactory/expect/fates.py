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
        dups: dict[str, list[tuple[int, int]]] = {}
        for (stream, seq), copies in truth.duplicates.items():
            dups.setdefault(stream, []).append((seq, copies))
        delays: dict[str, list[tuple[int, int]]] = {}
        for (stream, seq), ms in truth.delays.items():
            delays.setdefault(stream, []).append((seq, ms))
        self.delays = {
            stream: (np.array([q for q, _ in v], dtype=np.int64),
                     np.array([ms * 1000 for _, ms in v], dtype=np.int64))
            for stream, v in ((s, sorted(v)) for s, v in delays.items())
        }  # fmt: skip
        self.copies = {
            stream: (np.array([q for q, _ in v], dtype=np.int64),
                     np.array([c for _, c in v], dtype=np.int64))
            for stream, v in ((s, sorted(v)) for s, v in dups.items())
        }  # fmt: skip

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
            seqs, us = self.delays[block.stream]
            at = np.minimum(np.searchsorted(seqs, seq), len(seqs) - 1)
            out["delay_us"] = np.where(seqs[at] == seq, us[at], 0)
        for f, mask in hit.items():
            out[f] = np.flatnonzero(mask)
        if block.stream in self.copies:
            seqs, copies = self.copies[block.stream]
            at = np.searchsorted(seqs, seq)
            at = np.minimum(at, len(seqs) - 1)
            dup = (seqs[at] == seq) & ~gone
            rows = np.flatnonzero(dup)
            out[DUPLICATED] = np.repeat(rows, copies[at[rows]])
        return out
