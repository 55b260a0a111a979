"""Time-driven pack state, for the events of driven streams.

:class:`PendingEvents` holds columnar events until their time comes (added in any order,
taken oldest first). :class:`DailySteps` advances a model in whole simulated days and says
up to when its events are complete, which is what a driven stream may release.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DAY_US = 86_400_000_000


class PendingEvents:
    """Batches of equal-length columns, one of them ``t`` (event time, µs)."""

    def __init__(self) -> None:
        self._batches: list[dict[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self._batches)

    def add(self, **columns: Any) -> None:
        self._batches.append(columns)

    def take(self, until_us: int, limit: int) -> dict[str, Any] | None:
        """At most ``limit`` events with ``t <= until_us``, oldest first; None if none."""
        if not self._batches:
            return None
        cols = {k: np.concatenate([b[k] for b in self._batches]) for k in self._batches[0]}
        order = np.argsort(cols["t"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        due = min(int(np.searchsorted(cols["t"], until_us, side="right")), limit)
        self._batches = [{k: v[due:] for k, v in cols.items()}] if due < len(order) else []
        if due == 0:
            return None
        return {k: v[:due] for k, v in cols.items()}


class DailySteps:
    """A model that changes in whole days: ``_start`` at the first ``advance``, then ``_day``
    for every day that ended by ``now``; its events go to ``pending``."""

    def __init__(self) -> None:
        self.t_us: int | None = None  # simulated up to here (a midnight after the start)
        self.next_day_us = 0
        self.pending = PendingEvents()

    def advance(self, now_us: int) -> None:
        if self.t_us is None:
            self.t_us = now_us
            self.next_day_us = (now_us // DAY_US + 1) * DAY_US
            self._start(now_us)
            return
        while self.next_day_us <= now_us:  # whole days only: the rest waits for its end
            self._day(self.t_us, self.next_day_us)
            self.t_us = self.next_day_us
            self.next_day_us += DAY_US

    def _start(self, now_us: int) -> None:
        """The run starts at ``now_us``."""

    def _day(self, t0: int, t1: int) -> None:
        raise NotImplementedError

    def take_due(self, until_us: int | None, limit: int, final: bool) -> dict[str, Any] | None:
        """Events a driven stream may release: up to ``until_us``, and (unless the run ended)
        only from days already simulated, so every earlier event is known."""
        until = until_us if until_us is not None else 0
        if not final:
            until = min(until, self.t_us if self.t_us is not None else 0)
        return self.pending.take(until, limit)
