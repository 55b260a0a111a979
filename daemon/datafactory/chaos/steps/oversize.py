"""``oversize``: a record bigger than the sink accepts (Kinesis: 1 MiB; Kafka: the
``max_record_bytes`` of the sink). The sink rejects it permanently; the manifest says it was
meant. JSON records grow a padding field; Avro records trailing bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from datafactory.chaos import records
from datafactory.chaos.base import FaultLog, RenderContext, Step, StepConfig
from datafactory.engine.blocks import RecordBlock
from datafactory.units import ByteSize

DEFAULT_LIMIT = 2**20


class OversizeConfig(StepConfig):
    step: Literal["oversize"] = "oversize"
    bytes: ByteSize | None = Field(
        None, gt=0, description="record size; default: the sink's limit + 1 KiB (1 MiB if none)"
    )


class Oversize(Step):
    Config = OversizeConfig
    byte_level = True

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        rows = self.select(block)
        if not len(rows):
            return block
        log.add(self, "oversize", block, rows)
        return self.patch(block, rows, [None] * len(rows), "oversize")

    def render(
        self, clean: bytes, param: Any, ctx: RenderContext, fields: Sequence[int] | None = None
    ) -> bytes:
        cfg = self.cfg
        assert isinstance(cfg, OversizeConfig)
        size = cfg.bytes or (ctx.max_record_bytes or DEFAULT_LIMIT) + 1024
        prefix, body, suffix = records.split(clean, ctx)
        pad = max(0, size - len(clean))
        if ctx.format == "json":
            grown = b'{"padding":"' + b"x" * pad + b'",' + body[1:]
            return records.join(prefix, grown, suffix, ctx)
        return prefix + body + b"\x00" * pad
