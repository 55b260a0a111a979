"""What an encoder hands to a sink: one contiguous payload plus record boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from datafactory.engine.blocks import RecordBlock
from datafactory.schema import EventSchema

# rows (ascending, int64) whose bytes are given instead of encoded: a byte-level chaos fault
Subst: TypeAlias = "tuple[npt.NDArray[np.int64], tuple[bytes, ...]]"


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """``payload[offsets[i]:offsets[i+1]]`` is record ``i`` (JSON lines keep their newline).

    Line formats write ``payload`` as is; message sinks (Kafka, Kinesis) cut it per record.
    ``rows`` selects a subset (what is left to deliver after a partial failure); iterate with
    ``records()`` / ``seqs()``, which honour it.
    """

    stream: str
    schema: EventSchema
    format: str
    payload: memoryview
    offsets: npt.NDArray[np.int64]
    block: RecordBlock
    rows: npt.NDArray[np.intp] | None = None
    # asked for with encode(..., fields=True), compiled encoders only: where each top-level
    # field of record i starts, from the record's start, and where its last field ends
    fields: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.rows is None else len(self.rows)

    def indices(self) -> npt.NDArray[np.intp]:
        """Row numbers of this batch's records in its block (all, or the subset's)."""
        return np.arange(len(self.offsets) - 1) if self.rows is None else self.rows

    @property
    def nbytes(self) -> int:
        if self.rows is None:
            return int(self.offsets[-1] - self.offsets[0])
        return int((self.offsets[self.rows + 1] - self.offsets[self.rows]).sum())

    def contiguous(self) -> memoryview:
        """All (selected) records back to back; zero copy unless this is a subset."""
        if self.rows is not None:
            return memoryview(b"".join(self.records()))
        return self.payload[int(self.offsets[0]) : int(self.offsets[-1])]

    def record(self, i: int) -> memoryview:
        """The ``i``-th record of the *whole* batch (ignores ``rows``)."""
        return self.payload[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def records(self) -> list[memoryview]:
        off = self.offsets.tolist()
        p = self.payload
        return [p[off[i] : off[i + 1]] for i in self.indices().tolist()]

    def sizes(self) -> npt.NDArray[np.int64]:
        idx = self.indices()
        out: npt.NDArray[np.int64] = self.offsets[idx + 1] - self.offsets[idx]
        return out

    def seqs(self) -> npt.NDArray[np.int64]:
        return self.block.seq[self.indices()]

    def keys(self) -> npt.NDArray[np.int64]:
        return self.block.key[self.indices()]

    def subset(self, keep: npt.NDArray[np.bool_]) -> EncodedBatch:
        """The records where ``keep`` (aligned with this batch's records) is true."""
        return EncodedBatch(
            self.stream,
            self.schema,
            self.format,
            self.payload,
            self.offsets,
            self.block,
            self.indices()[keep],
        )


class PartialDeliveryError(Exception):
    """Some records of a batch were delivered, some not: ``failed`` marks the latter.

    The engine counts the delivered ones, counts ``permanent`` ones as failed, and retries
    only the rest, with backoff.
    """

    def __init__(
        self,
        failed: npt.NDArray[np.bool_],
        reason: str,
        permanent: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        super().__init__(f"{int(failed.sum())} of {len(failed)} records failed: {reason}")
        self.failed = failed
        self.reason = reason
        # failed records that no retry can deliver (e.g. too big): counted failed at once
        self.permanent = permanent if permanent is not None else np.zeros_like(failed)


def splice(batch: EncodedBatch, subst: Subst | None) -> EncodedBatch:
    """``batch`` with the records at ``subst``'s rows replaced by its bytes (for encoders
    without the compiled path, which writes them in place of the rows it would render)."""
    if subst is None or not len(subst[0]):
        return batch
    rows, replacements = subst
    sizes = np.diff(batch.offsets)
    off = batch.offsets.tolist()
    parts: list[bytes | memoryview] = []
    prev = 0
    for r, out in zip(rows.tolist(), replacements, strict=True):
        parts += [batch.payload[off[prev] : off[r]], out]
        sizes[r] = len(out)
        prev = r + 1
    parts.append(batch.payload[off[prev] : off[-1]])
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    payload = memoryview(b"".join(parts))
    return EncodedBatch(
        batch.stream, batch.schema, batch.format, payload, offsets, batch.block, batch.rows
    )


class Encoder(Protocol):
    format: str
    schema: EventSchema

    def encode(
        self, block: RecordBlock, subst: Subst | None = None, *, fields: bool = False
    ) -> EncodedBatch:
        """The block's records (``subst``: rows whose given bytes go out instead;
        ``fields``: where each record's fields are, if the encoder can say)."""
        ...
