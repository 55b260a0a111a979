"""``duplicate``: an event is delivered more than once (same event_id, same bytes), right
after the original or ``delay`` later (a redelivery after a producer retry)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from datafactory.chaos.base import FaultLog, HoldingStep, StepConfig
from datafactory.engine.blocks import RecordBlock
from datafactory.units import Duration


class DuplicateConfig(StepConfig):
    step: Literal["duplicate"] = "duplicate"
    copies: int = Field(1, ge=1, le=100, description="extra copies of each hit event")
    delay: Duration = Field(0.0, ge=0, description="0: right after the original; else this late")


class Duplicate(HoldingStep):
    Config = DuplicateConfig
    rejectable = False

    @property
    def selects_rows(self) -> bool:  # type: ignore[override]
        return self.cfg.delay <= 0  # type: ignore[attr-defined, no-any-return]

    def rows(self, block: RecordBlock, log: FaultLog) -> npt.NDArray[np.intp] | None:
        rows = self._hits(block, log)
        if not len(rows):
            return None
        reps = np.ones(len(block), dtype=np.intp)
        reps[rows] += self.cfg.copies  # type: ignore[attr-defined]
        return np.repeat(np.arange(len(block)), reps)

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        if self.selects_rows:
            return super().apply(block, log)
        cfg = self.cfg
        assert isinstance(cfg, DuplicateConfig)
        rows = self._hits(block, log)
        if len(rows):
            copies = np.repeat(rows, cfg.copies)
            due = block.event_time[copies] + int(cfg.delay * 1_000_000)
            self.holding.add(block.take(copies), due)
        return block

    def _hits(self, block: RecordBlock, log: FaultLog) -> npt.NDArray[np.intp]:
        """The rows hit, written down."""
        cfg = self.cfg
        assert isinstance(cfg, DuplicateConfig)
        rows = self.select(block)
        log.add(self, "duplicate", block, rows, {"copies": cfg.copies, "delay_s": cfg.delay})
        return rows
