"""``corrupt_bytes``: the record's bytes are damaged in transit or at the producer.

Kinds: ``truncate`` (cut short), ``invalid_utf8`` (a byte sequence no UTF-8 decoder
accepts, inside a string), ``garbage`` (random bytes of the same length), ``bad_framing``
(JSON: the opening brace lost; Avro: the single-object marker broken) and
``wrong_fingerprint`` (Avro: framed with a fingerprint no registry knows; JSON records have
no fingerprint, so they get ``bad_framing`` and the manifest says so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from datafactory.chaos import records
from datafactory.chaos.base import FaultLog, RenderContext, Step, StepConfig
from datafactory.engine.blocks import RecordBlock

Kind = Literal["truncate", "invalid_utf8", "garbage", "bad_framing", "wrong_fingerprint"]


KINDS: list[Kind] = ["truncate", "invalid_utf8", "garbage", "bad_framing", "wrong_fingerprint"]
KEEP_HEAD = 64


class CorruptBytesConfig(StepConfig):
    step: Literal["corrupt_bytes"] = "corrupt_bytes"
    kinds: list[Kind] = Field(
        default_factory=lambda: list(KINDS),
        min_length=1,
    )


# every byte to 0x80..0xff: never a newline, never ASCII, so never JSON
_HIGH = bytes(0x80 | b for b in range(256))


def garbage(seed: int, n: int, json: bool) -> bytes:
    """``n`` seeded random bytes, starting with 0xff (no text format begins with it)."""
    raw = hashlib.shake_128(seed.to_bytes(8, "little")).digest(n).translate(_HIGH)
    return b"\xff" + raw[1:] if n else b""


class CorruptBytes(Step):
    Config = CorruptBytesConfig
    byte_level = True

    def apply(self, block: RecordBlock, log: FaultLog) -> RecordBlock:
        rows = self.select(block)
        if not len(rows):
            return block
        cfg = self.cfg
        assert isinstance(cfg, CorruptBytesConfig)
        seq = block.seq[rows]
        kinds = np.array(cfg.kinds)[self.choice(seq, len(cfg.kinds))]
        draws = self.hashes(seq, lane=2) >> np.uint64(1)
        for kind in cfg.kinds:
            log.add(self, kind, block, rows[kinds == kind])
        params = list(zip(kinds.tolist(), draws.tolist(), strict=True))
        return self.patch(block, rows, params, "corrupt_bytes")

    def rendered_kind(self, param: Any, ctx: RenderContext) -> str:
        kind = str(param[0])
        return "bad_framing" if kind == "wrong_fingerprint" and not ctx.framed else kind

    def render(
        self, clean: bytes, param: Any, ctx: RenderContext, fields: Sequence[int] | None = None
    ) -> bytes:
        kind, draw = param
        prefix, body, suffix = records.split(clean, ctx)
        json = ctx.format == "json"
        if kind == "wrong_fingerprint" and not ctx.framed:
            kind = "bad_framing"
        if kind == "truncate":
            # keep the record's head (its event_id): two cut records never look the same
            keep = min(KEEP_HEAD, len(body) - 1)
            cut = keep + draw % max(1, len(body) - keep)
            return records.join(prefix, body[:cut], suffix, ctx)
        if kind == "invalid_utf8":
            if json:  # inside the first string value
                at = body.find(b'":"')
                at = at + 3 if at >= 0 else len(body) // 2
            else:  # Avro: the first string (event_id) starts after its length byte
                at = 1
            return records.join(prefix, body[:at] + b"\xc3\x28\xff" + body[at:], suffix, ctx)
        if kind == "garbage":
            return records.join(prefix, garbage(draw, len(body), json), suffix, ctx)
        if kind == "bad_framing":
            if json:
                return records.join(prefix, body[1:], suffix, ctx)
            return b"\xc3\x00" + clean[2:] if ctx.framed else clean[1:]
        # wrong_fingerprint (framed Avro)
        return records.AVRO_MAGIC + (int(draw) | 1 << 62).to_bytes(8, "little") + body
