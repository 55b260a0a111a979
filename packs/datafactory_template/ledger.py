"""Balances: an entity whose members keep a running balance that never goes below zero.

    entities:
      accounts:
        count: 20000
        fields:
          account_id: {gen: pattern, pattern: "ACC{seq:08d}"}
          opening: {gen: lognormal, mu: 6, sigma: 1, decimals: 2}
        balance: {opening: opening, decimals: 2}
    streams:
      payments:
        fields:
          account_id: {gen: ref, entity: accounts, field: account_id}
          sign: {gen: choice, values: [-1, 1], weights: [7, 3]}
          amount: {gen: lognormal, mu: 3, sigma: 1, min: 0.01, decimals: 2}
          delta: {gen: expr, expr: "sign * amount", decimals: 2}
          balance_after: {gen: posting, ref: account_id, amount: delta}
          declined: {gen: declined, posting: balance_after}

A ``posting`` field applies each event's amount to its member's balance, in seq order, unless
that would take it below zero (then the event is ``declined`` and the balance stays): its
value is the balance after. A member's balance opens at its ``opening`` field the first time it
is posted to. One stream posts to an entity's balances, so the postings' order is the
stream's seq order and the same seq is the same event however time is sliced (the balances
are part of the pack's saved state).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

I64 = npt.NDArray[np.int64]


class Balance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    opening: str = Field(..., description="the entity's field each member's balance opens at")
    decimals: int = Field(2, ge=0, le=9, description="the balance's decimal places")


class Ledger:
    """The members' balances (in minor units), opened as they are first posted to."""

    def __init__(self, count: int, first: int = 0) -> None:
        """``count`` members' balances from member ``first`` (a shard's own)."""
        self.balance = np.zeros(count, dtype=np.int64)
        self.opened = np.zeros(count, dtype=np.bool_)
        self.first = first

    def post(self, members: I64, amounts: I64, opening: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
        """Each amount (minor units) to its member, in order; ``opening``: each event's
        member's opening balance. The balances after, and which were declined."""
        members = members - self.first
        new = ~self.opened[members]
        if new.any():
            first = np.unique(members[new], return_index=True)[1]
            rows = np.flatnonzero(new)[first]
            self.balance[members[rows]] = opening[rows]
            self.opened[members[rows]] = True
        bal = self.balance
        after = np.empty(len(members), dtype=np.int64)
        declined = np.zeros(len(members), dtype=np.bool_)
        # in order: an event sees the postings before it (a loop over plain ints)
        for i, (m, x) in enumerate(zip(members.tolist(), amounts.tolist(), strict=True)):
            b = int(bal[m]) + x
            if b < 0:
                declined[i] = True
                after[i] = bal[m]
            else:
                bal[m] = b
                after[i] = b
        return after, declined
