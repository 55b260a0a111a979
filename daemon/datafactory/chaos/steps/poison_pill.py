"""``poison_pill``: a record no consumer can parse, in any format: NUL bytes, a marker and
seeded garbage. The classic message that crashes a consumer that does not guard its
deserialiser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from datafactory.chaos import records
from datafactory.chaos.base import FaultLog, RenderContext, Step, StepConfig
from datafactory.chaos.steps.corrupt_bytes import garbage
from datafactory.engine.blocks import RecordBlock


class PoisonPillConfig(StepConfig):
    step: Literal["poison_pill"] = "poison_pill"


class PoisonPill(Step):
    Config = PoisonPillConfig
    byte_level = True

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        rows = self.select(block)
        if not len(rows):
            return block
        log.add(self, "poison_pill", block, rows)
        draws = (self.hashes(block.seq[rows], lane=2) >> 1).tolist()
        return self.patch(block, rows, draws, "poison_pill")

    def render(
        self, clean: bytes, param: Any, ctx: RenderContext, fields: Sequence[int] | None = None
    ) -> bytes:
        json = ctx.format == "json"
        body = b"\x00\x00\x00\x00POISON\x00" + garbage(int(param), 24, json)
        return records.join(b"", body, b"\n" if json else b"", ctx)
