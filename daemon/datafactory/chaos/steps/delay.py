"""``delay`` (alias ``reorder``): an event arrives late, after events that happened later,
with its original event time. Each hit event is held back between ``min`` and ``max``
(event time), then released with whatever the stream sends next."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from datafactory.chaos.base import FaultLog, HoldingStep, StepConfig
from datafactory.engine.blocks import RecordBlock
from datafactory.units import Duration


class DelayConfig(StepConfig):
    step: Literal["delay", "reorder"] = "delay"
    min: Duration = Field(1.0, ge=0, description="shortest hold-back")
    max: Duration = Field(30.0, gt=0, description="longest hold-back")

    @model_validator(mode="after")
    def _order(self) -> DelayConfig:
        if self.max < self.min:
            raise ValueError("max must be at least min")
        return self


class Delay(HoldingStep):
    Config = DelayConfig
    rejectable = False

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        rows = self.select(block)
        if not len(rows):
            return block
        cfg = self.cfg
        assert isinstance(cfg, DelayConfig)
        u = self.uniform(block.seq[rows], lane=2)
        delay_us = ((cfg.min + u * (cfg.max - cfg.min)) * 1_000_000).astype(np.int64)
        log.add(
            self, "delay", block, rows, [{"delay_ms": int(d) // 1000} for d in delay_us.tolist()]
        )
        self.holding.add(block.take(rows), block.event_time[rows] + delay_us)
        keep = np.ones(len(block), dtype=np.bool_)
        keep[rows] = False
        return block.take(np.flatnonzero(keep))
