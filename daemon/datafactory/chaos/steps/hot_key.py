"""``hot_key``: partition keys of hit events collapse onto a few hot keys, so their
partitions or shards take far more than their share (a celebrity customer, a stuck
default)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from datafactory.chaos.base import FaultLog, Step, StepConfig
from datafactory.engine.blocks import RecordBlock


class HotKeyConfig(StepConfig):
    step: Literal["hot_key"] = "hot_key"
    keys: int = Field(1, ge=1, le=1000, description="how many hot keys")


class HotKey(Step):
    Config = HotKeyConfig
    rejectable = False

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        rows = self.select(block)
        if not len(rows):
            return block
        cfg = self.cfg
        assert isinstance(cfg, HotKeyConfig)
        hot = (self.choice(block.seq[rows], cfg.keys) + 1).astype(np.int64) * -7919
        log.add(
            self,
            "hot_key",
            block,
            rows,
            [
                {"key": int(k), "hot_key": int(h)}
                for k, h in zip(block.key[rows].tolist(), hot.tolist(), strict=True)
            ],
        )
        key = block.key.copy()
        key[rows] = hot
        out = block.take(slice(None))
        out.key = key
        return out
