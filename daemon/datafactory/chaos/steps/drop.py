"""``drop``: events vanish on the way. The manifest names each one, so an intentional drop
is never mistaken for a real loss."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from datafactory.chaos.base import FaultLog, Step, StepConfig
from datafactory.engine.blocks import RecordBlock


class DropConfig(StepConfig):
    step: Literal["drop"] = "drop"


class Drop(Step):
    Config = DropConfig
    rejectable = False

    selects_rows = True

    def rows(self, block: RecordBlock, log: FaultLog) -> npt.NDArray[np.intp] | None:
        rows = self.select(block)
        if not len(rows):
            return None
        log.add(self, "drop", block, rows)
        keep = np.ones(len(block), dtype=np.bool_)
        keep[rows] = False
        return np.flatnonzero(keep)
