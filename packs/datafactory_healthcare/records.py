"""What the care model made and its streams have not sent yet, as columns.

Each simulated step's encounters and claims are one :class:`Batch`: encounter rows (who, when,
where, diagnoses and lines as child rows) numbered from ``enc_first``, claim rows (submission,
adjudication, the encounter they bill) numbered from ``claim_first``. A stream takes the rows
its events name (:meth:`Records.claims`, :meth:`Records.encounters`) as one set of columns,
in its events' order; a batch is dropped when every stream is done with all its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
CLAIM_KEYS = ("submitted", "related", "error", "decided", "outcome")


def offsets(counts: npt.ArrayLike) -> I32:
    c = np.asarray(counts)
    off = np.zeros(len(c) + 1, dtype=np.int32)
    np.cumsum(c, out=off[1:])
    return off


def ragged_take(off: npt.NDArray[Any], rows: I64) -> tuple[I32, I64]:
    """Child rows of ``rows`` (in that order): their offsets, and where each child row was."""
    lo = off[rows].astype(np.int64)
    counts = off[rows + 1] - lo
    new = offsets(counts)
    flat = np.repeat(lo - new[:-1], counts) + np.arange(int(new[-1]), dtype=np.int64)
    return new, flat


@dataclass(eq=False)
class Batch:
    enc_first: int
    claim_first: int
    enc: dict[str, I64]  # patient, practitioner, org, klass, start, end
    dx_off: I32
    dx: I64
    item_off: I32
    items: dict[str, I64]  # px, charge, served
    claim: dict[str, I64]  # enc (row), submitted, related, error, decided, outcome
    claim_item_off: I32  # each claim's lines (those of the encounter it bills)
    claim_items: dict[str, I64]  # allowed, benefit, reason, per line
    enc_sends: I64  # messages still to send, per encounter
    claim_sends: I64  # documents still to send, per claim


class Encounters:
    """Encounters as columns: one row per encounter, child rows per diagnosis (``dx_off``)
    and per line (``item_off``)."""

    patient: I64
    practitioner: I64
    org: I64
    klass: I64
    encounter: I64
    start: I64
    end: I64
    dx_off: I32
    dx: I64
    item_off: I32
    item_px: I64
    item_charge: I64
    item_served: I64
    item_seq: I64  # 1, 2, ... within the row
    item_row: I64  # the row each line is of

    @property
    def n(self) -> int:
        return len(self.encounter)


class Claims(Encounters):
    """Claims as columns: one row per claim, with the encounter it bills (its diagnoses and
    lines as child rows) and its adjudication (per line)."""

    number: I64
    submitted: I64
    related: I64  # -1: none
    error: I64  # index into CLAIM_ERRORS, -1: none
    decided: I64
    outcome: I64  # index into OUTCOMES
    allowed: I64
    benefit: I64
    reason: I64  # index into DENIALS, -1: not denied
    total: I64


class _View:
    """Every live batch's rows as one set of columns (built when the batches change): a
    number is found by its batch (``searchsorted`` on the batches' first numbers), its row
    is the batch's base plus its place in the batch. The batches' ``*_sends`` become views
    of the view's, so a send counted here is counted in its batch."""

    def __init__(self, batches: list[Batch]) -> None:
        def cat(arrays: list[Any]) -> Any:
            return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)

        enc_n = [len(b.enc_sends) for b in batches]
        claim_n = [len(b.claim_sends) for b in batches]
        self.enc_first = np.array([b.enc_first for b in batches], dtype=np.int64)
        self.claim_first = np.array([b.claim_first for b in batches], dtype=np.int64)
        self.enc_base = offsets(enc_n).astype(np.int64)
        self.claim_base = offsets(claim_n).astype(np.int64)
        keys = ("patient", "practitioner", "org", "klass", "start", "end")
        self.enc = {k: cat([b.enc[k] for b in batches]) for k in keys}
        self.enc["encounter"] = cat(
            [
                b.enc_first + np.arange(n, dtype=np.int64)
                for b, n in zip(batches, enc_n, strict=True)
            ]
        )
        self.dx_off = offsets(cat([np.diff(b.dx_off) for b in batches]))
        self.dx = cat([b.dx for b in batches])
        self.item_off = offsets(cat([np.diff(b.item_off) for b in batches]))
        self.items = {k: cat([b.items[k] for b in batches]) for k in ("px", "charge", "served")}
        self.claim = {k: cat([b.claim[k] for b in batches]) for k in CLAIM_KEYS}
        self.claim["enc"] = cat(
            [
                b.claim["enc"] + base
                for b, base in zip(batches, self.enc_base.tolist(), strict=False)
            ]
        )
        self.claim_item_off = offsets(cat([np.diff(b.claim_item_off) for b in batches]))
        self.claim_items = {
            k: cat([b.claim_items[k] for b in batches]) for k in ("allowed", "benefit", "reason")
        }
        self.enc_sends = cat([b.enc_sends for b in batches])
        self.claim_sends = cat([b.claim_sends for b in batches])
        for i, b in enumerate(batches):
            b.enc_sends = self.enc_sends[self.enc_base[i] : self.enc_base[i + 1]]
            b.claim_sends = self.claim_sends[self.claim_base[i] : self.claim_base[i + 1]]

    def enc_rows(self, numbers: I64) -> I64:
        b = np.searchsorted(self.enc_first, numbers, side="right") - 1
        return self.enc_base[b] + numbers - self.enc_first[b]

    def claim_rows(self, numbers: I64) -> I64:
        b = np.searchsorted(self.claim_first, numbers, side="right") - 1
        return self.claim_base[b] + numbers - self.claim_first[b]


class Records:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._view: _View | None = None

    def __getstate__(self) -> dict[str, Any]:  # saved: the batches (the view is made again)
        return {"batches": self.batches}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.batches, self._view = state["batches"], None

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)
        self._view = None

    @property
    def view(self) -> _View:
        if self._view is None:
            self._view = _View(self.batches)
        return self._view

    def encounters(self, numbers: I64) -> Encounters:
        v = self.view
        out = Encounters()
        self._encounter_columns(out, v.enc_rows(numbers))
        out.item_row = np.repeat(np.arange(len(numbers)), np.diff(out.item_off))
        out.item_seq = _positions(out.item_off)
        return out

    def claims(self, numbers: I64) -> Claims:
        v = self.view
        rows = v.claim_rows(numbers)
        out = Claims()
        out.number = numbers.astype(np.int64)
        for key in CLAIM_KEYS:
            setattr(out, key, v.claim[key][rows])
        self._encounter_columns(out, v.claim["enc"][rows])
        # the adjudicated lines: per claim, in the order of its encounter's lines
        _, flat = ragged_take(v.claim_item_off, rows)
        for key in ("allowed", "benefit", "reason"):
            setattr(out, key, v.claim_items[key][flat])
        out.item_seq = _positions(out.item_off)
        out.item_row = np.repeat(np.arange(out.n), np.diff(out.item_off))
        out.total = np.add.reduceat(out.item_charge, out.item_off[:-1].astype(np.int64))
        return out

    def _encounter_columns(self, out: Any, rows: I64) -> None:
        v = self.view
        for key in ("patient", "practitioner", "org", "klass", "start", "end", "encounter"):
            setattr(out, key, v.enc[key][rows])
        out.dx_off, flat = ragged_take(v.dx_off, rows)
        out.dx = v.dx[flat]
        out.item_off, flat = ragged_take(v.item_off, rows)
        out.item_px, out.item_charge = v.items["px"][flat], v.items["charge"][flat]
        out.item_served = v.items["served"][flat]

    def sent_claims(self, numbers: I64) -> None:
        v = self.view
        np.subtract.at(v.claim_sends, v.claim_rows(numbers), 1)
        self._drop()

    def sent_encounters(self, numbers: I64) -> None:
        v = self.view
        np.subtract.at(v.enc_sends, v.enc_rows(numbers), 1)
        self._drop()

    def _drop(self) -> None:
        """Batches every stream is done with go."""
        v = self.view
        left = np.zeros(len(self.batches), dtype=np.int64)
        for sends, base in ((v.enc_sends, v.enc_base), (v.claim_sends, v.claim_base)):
            if len(sends):
                counts = np.diff(base)
                nonempty = counts > 0
                left[nonempty] += np.add.reduceat(sends, base[:-1][nonempty])
        if (left == 0).any():
            self.batches = [b for b, n in zip(self.batches, left.tolist(), strict=True) if n]
            self._view = None


def _positions(off: I32) -> I64:
    counts = np.diff(off)
    return np.arange(int(off[-1]), dtype=np.int64) - np.repeat(off[:-1], counts) + 1
