"""The chain: steps applied in config order to every released slice, and the per-sink pass
that renders byte-level faults into the encoded batch.

Block-level steps (drop, duplicate, delay, hot_key, timestamp_skew, out-of-range values)
change the block itself. Byte-level steps (schema drift, corrupt values and bytes, poison
pills, oversize) mark rows with a :class:`~datafactory.engine.blocks.Patch`; each sink's
encoder output is then spliced: the marked records are re-rendered in that sink's format and
everything between them is copied as is. Events a step holds back (delay, delayed
duplicates) pass the steps after it when they are released.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from datafactory.chaos.base import Fault, FaultLog, RenderContext, Step
from datafactory.encoders.base import EncodedBatch
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
        chosen: npt.NDArray[np.intp] | None = None  # rows chosen by steps, not yet taken
        for step in self.steps:
            released = step.due(now) if now is not None else None
            if step.selects_rows:
                idx = step.rows(block if chosen is None else _keys(block, chosen), faults)
                if idx is not None:
                    chosen = idx if chosen is None else chosen[idx]
                if released is None:
                    continue
            if chosen is not None:  # the rows chosen so far, taken before a step that reads
                block, chosen = block.take(chosen), None  # columns or a release joins them
            if not step.selects_rows:
                block = step.apply(block, faults)
            if released is not None:
                block = concat([block, released])
        if chosen is not None:
            block = block.take(chosen)
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
        record = record[:-1]
    return hashlib.blake2b(record, digest_size=8).hexdigest()


def render_patches(
    batch: EncodedBatch, ctx: RenderContext, sink: str
) -> tuple[EncodedBatch, list[Fault]]:
    """The batch with its byte-level faults rendered for this sink, and what each became."""
    block = batch.block
    if not block.patches:
        return batch, []
    replaced: dict[int, bytes] = {}
    faults: list[Fault] = []
    for p in block.patches:
        step: Step = p.step
        by_kind: dict[str, tuple[list[int], list[Any], list[str]]] = {}
        for i, (r, param) in enumerate(zip(p.rows.tolist(), p.params, strict=True)):
            clean = bytes(batch.record(r))
            kind = step.rendered_kind(param, ctx)
            try:
                out = step.render(clean, param, ctx)
                detail = None
            except Exception as e:  # never lose the record; say what went wrong
                log.error("chaos_render_failed", step=step.name, sink=sink, error=repr(e))
                out, detail = clean, {"render_error": repr(e)}
            replaced[r] = out
            pos, details, digests = by_kind.setdefault(kind, ([], [], []))
            pos.append(i)
            details.append(detail)
            digests.append(digest(out, ctx.format))
        for kind, (pos, details, digests) in by_kind.items():
            rows = p.rows[pos]
            faults.append(
                Fault(
                    step.cfg.step,
                    step.name,
                    kind,
                    block.stream,
                    block.seq[rows],
                    block.event_time[rows],
                    details,
                    sink,
                    digests,
                )
            )
    sizes = np.diff(batch.offsets)
    parts: list[bytes | memoryview] = []
    off = batch.offsets.tolist()
    prev = 0
    for r in sorted(replaced):
        parts.append(batch.payload[off[prev] : off[r]])
        parts.append(replaced[r])
        sizes[r] = len(replaced[r])
        prev = r + 1
    parts.append(batch.payload[off[prev] : off[-1]])
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    payload = memoryview(b"".join(parts))
    spliced = EncodedBatch(
        batch.stream, batch.schema, batch.format, payload, offsets, block, batch.rows
    )
    return spliced, faults
