"""What an encoder hands to a sink: one contiguous payload plus record boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from datafactory.engine.blocks import RecordBlock
from datafactory.schema import EventSchema


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """``payload[offsets[i]:offsets[i+1]]`` is record ``i`` (JSON lines keep their newline).

    Line formats write ``payload`` as is; message sinks (Kafka, Kinesis) cut it per record.
    """

    stream: str
    schema: EventSchema
    format: str
    payload: memoryview
    offsets: npt.NDArray[np.int64]
    block: RecordBlock

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1] - self.offsets[0])

    def record(self, i: int) -> memoryview:
        return self.payload[int(self.offsets[i]) : int(self.offsets[i + 1])]


class Encoder(Protocol):
    format: str
    schema: EventSchema

    def encode(self, block: RecordBlock) -> EncodedBatch: ...
