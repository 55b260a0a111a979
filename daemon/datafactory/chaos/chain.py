"""The chain: steps applied in config order to every released slice, and the per-sink pass
that renders byte-level faults into the encoded batch.

Block-level steps (drop, duplicate, delay, hot_key, timestamp_skew, out-of-range values)
change the block itself; steps that only choose rows pick them (``RecordBlock.pick``): the
columns are not copied, the compiled encoder reads them through the rows. Byte-level steps
(schema drift, corrupt values and bytes, poison pills, oversize) mark rows with a
:class:`~datafactory.engine.blocks.Patch`; each sink encodes the marked records clean, breaks
them in its format, and encodes the block with the broken bytes in their place. Events a step
holds back (delay, delayed duplicates) pass the steps after it when they are released.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from datafactory.chaos.base import Fault, FaultLog, RenderContext, Step
from datafactory.encoders.base import EncodedBatch, Encoder
from datafactory.engine.blocks import RecordBlock, concat

log = structlog.get_logger("datafactory.chaos")


class Chain:
    """The steps that apply to one stream, in config order."""

    def __init__(self, stream: str, steps: list[Step], report: Callable[[FaultLog], None]):
        self.stream = stream
        self.steps = steps
        self.report = report
        self._empty: RecordBlock | None = None
        self.carry: RecordBlock | None = None

    def start(self, t0_us: int) -> None:
        """Schedules count from here (the stream's start, in event time)."""
        for s in self.steps:
            s.t0_us = t0_us

    def __call__(self, block: RecordBlock) -> RecordBlock:
        out, faults = self.apply(block)
        self.report(faults)
        return out

    def apply(self, block: RecordBlock) -> tuple[RecordBlock, FaultLog]:
        """The block through every step, and what was injected (not yet reported: this may
        run in a worker thread; the caller reports on the event loop)."""
        if self._empty is None:
            self._empty = block.take(np.empty(0, dtype=np.intp))
        faults = FaultLog()
        now = int(block.event_time[-1]) if len(block) else None
        chosen: npt.NDArray[np.intp] | None = None  # rows chosen by steps, not yet picked
        for step in self.steps:
            released = step.due(now) if now is not None else None
            if step.selects_rows:
                idx = step.rows(block if chosen is None else _keys(block, chosen), faults)
                if idx is not None:
                    chosen = idx if chosen is None else chosen[idx]
                if released is None:
                    continue
            if chosen is not None:  # the rows chosen so far, picked before a step that reads
                block, chosen = block.pick(chosen), None  # columns or a release joins them
            if not step.selects_rows:
                block = step.apply(block, faults)
            if released is not None:
                block = concat([block, released])
        if chosen is not None:
            block = block.pick(chosen)
        if self.carry is not None:
            block, self.carry = concat([block, self.carry]), None
        return block, faults

    def flush(self) -> RecordBlock | None:
        """Everything still held back (the stream ended), through the steps after its own."""
        if self._empty is None:
            return None
        faults = FaultLog()
        block = self._empty
        for step in self.steps:
            block = step.apply(block, faults) if len(block) else block
            released = step.due(None)
            if released is not None:
                block = concat([block, released])
        if self.carry is not None:
            block, self.carry = concat([block, self.carry]), None
        self.report(faults)
        return block if len(block) else None

    def held(self) -> int:
        return sum(s.held() for s in self.steps) + (len(self.carry) if self.carry else 0)

    def lowest_held(self) -> int | None:
        """The lowest seq held back (None: nothing is)."""
        lows = [low for s in self.steps if (low := s.lowest_held()) is not None]
        if self.carry is not None and len(self.carry):
            lows.append(int(self.carry.seq.min()))
        return min(lows) if lows else None

    def adopt(self, old: Chain) -> None:
        """Take over what ``old`` held back (a live change rebuilt the chain): it goes out
        with the next slice, as it is (its faults are already written down)."""
        self._empty = old._empty
        parts = [b for s in old.steps if (b := s.due(None)) is not None]
        if old.carry is not None:
            parts.insert(0, old.carry)
        self.carry = concat(parts) if parts else None


def _keys(block: RecordBlock, idx: npt.NDArray[np.intp]) -> RecordBlock:
    """The rows ``idx`` of ``block`` as a step that only chooses rows sees them: their seq,
    event time and key, no columns."""
    return RecordBlock(block.stream, block.seq[idx], block.event_time[idx], block.key[idx], {})


def digest(record: bytes, fmt: str) -> str:
    """How ``verify`` recognises a record it cannot parse: its bytes as a consumer sees them
    (a JSON record without its newline)."""
    if fmt == "json" and record.endswith(b"\n"):
        return hashlib.blake2b(memoryview(record)[:-1], digest_size=8).hexdigest()
    return hashlib.blake2b(record, digest_size=8).hexdigest()


def render_patches(
    encoder: Encoder, block: RecordBlock, ctx: RenderContext, sink: str
) -> tuple[EncodedBatch, list[Fault]]:
    """The block encoded for this sink with its byte-level faults rendered, and what each
    became. The patched rows are encoded clean on their own, each is broken as its patch
    says, and the block is encoded with those bytes in their rows' place (no splice)."""
    if not block.patches:
        return encoder.encode(block), []
    every = np.unique(np.concatenate([p.rows for p in block.patches]))
    clean = encoder.encode(block.pick(every, patches=False), fields=True)
    off, payload = clean.offsets.tolist(), bytes(clean.payload)
    spans = clean.fields.tolist() if clean.fields is not None else None
    at = dict(zip(every.tolist(), range(len(every)), strict=True))
    replaced: list[bytes] = [b""] * len(every)
    faults: list[Fault] = []
    for p in block.patches:
        step: Step = p.step
        outs: list[bytes] = []
        details: list[Any] = []
        for r, param in zip(p.rows.tolist(), p.params, strict=True):
            k = at[r]
            record = payload[off[k] : off[k + 1]]
            try:
                out = step.render(record, param, ctx, None if spans is None else spans[k])
                details.append(None)
            except Exception as e:  # never lose the record; say what went wrong
                log.error("chaos_render_failed", step=step.name, sink=sink, error=repr(e))
                out = record
                details.append({"render_error": repr(e)})
            replaced[k] = out
            outs.append(out)
        kinds = [step.rendered_kind(param, ctx) for param in p.params]
        for kind in dict.fromkeys(kinds):
            pos = [i for i, x in enumerate(kinds) if x == kind]
            rows = p.rows[pos]
            faults.append(
                Fault(
                    step.cfg.step,
                    step.name,
                    kind,
                    block.stream,
                    block.seq[rows],
                    block.event_time[rows],
                    [details[i] for i in pos],
                    sink,
                    [digest(outs[i], ctx.format) for i in pos],
                )
            )
    subst = (every.astype(np.int64), tuple(replaced))
    return encoder.encode(block, subst), faults
