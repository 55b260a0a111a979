"""``timestamp_skew``: an event's time is wrong: in the ``future`` (a device clock ahead),
the ``past`` (a replay), or off by whole hours (``timezone``: local time sent as UTC)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from pydantic import Field

from datafactory.chaos.base import FaultLog, Step, StepConfig
from datafactory.engine.blocks import RecordBlock
from datafactory.units import Duration

Kind = Literal["future", "past", "timezone"]
DAY = 86_400
KINDS: list[Kind] = ["future", "past", "timezone"]


class TimestampSkewConfig(StepConfig):
    step: Literal["timestamp_skew"] = "timestamp_skew"
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS), min_length=1)
    max_skew: Duration = Field(30 * DAY, gt=3600, description="largest future/past offset")


class TimestampSkew(Step):
    Config = TimestampSkewConfig

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        rows = self.select(block)
        if not len(rows):
            return block
        cfg = self.cfg
        assert isinstance(cfg, TimestampSkewConfig)
        seq = block.seq[rows]
        kinds = np.array(cfg.kinds)[self.choice(seq, len(cfg.kinds))]
        u = self.uniform(seq, lane=2)
        # future/past: at least an hour off; timezone: 1..12 whole hours either way
        span = np.int64(1_000_000) * (3600 + (u * (cfg.max_skew - 3600)).astype(np.int64))
        hours = self.choice(seq, 24, lane=3).astype(np.int64) - 12
        hours[hours >= 0] += 1
        offset = np.where(
            kinds == "future", span, np.where(kinds == "past", -span, hours * 3_600_000_000)
        )
        times = block.event_time.copy()
        times[rows] += offset
        for kind in cfg.kinds:
            sel = np.flatnonzero(kinds == kind)
            log.add(
                self,
                kind,
                block,
                rows[sel],
                [{"offset_s": int(o) // 1_000_000} for o in offset[sel].tolist()],
            )
        return dataclasses.replace(block, event_time=times)
