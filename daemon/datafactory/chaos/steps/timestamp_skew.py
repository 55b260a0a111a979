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
        # per hit: its kind as a number (0 future, 1 past, 2 timezone)
        kinds = np.array([KINDS.index(k) for k in cfg.kinds])[self.choice(seq, len(cfg.kinds))]
        u = self.uniform(seq, lane=2)
        # future/past: at least an hour off; timezone: 1..12 whole hours either way
        span = np.int64(1_000_000) * (3600 + (u * (cfg.max_skew - 3600)).astype(np.int64))
        hours = self.choice(seq, 24, lane=3).astype(np.int64) - 12
        hours[hours >= 0] += 1
        offset = np.where(kinds == 0, span, np.where(kinds == 1, -span, hours * 3_600_000_000))
        times = block.event_time.copy()
        times[rows] += offset
        for kind in dict.fromkeys(cfg.kinds):
            sel = np.flatnonzero(kinds == KINDS.index(kind))
            seconds = (offset[sel] // 1_000_000).tolist()
            log.add(self, kind, block, rows[sel], [{"offset_s": s} for s in seconds])
        return dataclasses.replace(block, event_time=times)
