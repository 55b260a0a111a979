"""The sink contract (Benthos ``BatchOutput``): connect, write_batch, close, healthcheck.

Sinks never sleep-retry on their own hot path: a sink that lost its connection raises
:class:`NotConnectedError` and the engine reconnects with backoff. ``max_in_flight`` says how
many ``write_batch`` calls the engine may have outstanding at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from datafactory.config import SinkBase
from datafactory.encoders.base import EncodedBatch


class NotConnectedError(ConnectionError):
    """The sink is not (or no longer) connected; the engine reconnects and retries."""


class SinkContext:
    """What a sink may know about the run it serves."""

    __slots__ = ("run_name", "run_seed")

    def __init__(self, run_name: str, run_seed: int) -> None:
        self.run_name = run_name
        self.run_seed = run_seed


class Sink(ABC):
    Config: ClassVar[type[SinkBase]]
    max_in_flight: int = 1
    # message sinks (one record per message) frame Avro as single-object encoding
    message_oriented: ClassVar[bool] = False

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def write_batch(self, batch: EncodedBatch) -> None:
        """Deliver every record of ``batch`` or raise; partial delivery is not success."""

    @abstractmethod
    async def close(self) -> None:
        """Flush and release; after close, everything written is durable where it applies."""

    async def healthcheck(self) -> bool:
        return True

    # -- lifecycle (called by the lifecycle manager, around connect/close) -----------------

    def local_service(self) -> str | None:
        """The local stand-in this sink needs (``"kafka"``, ``"aws"``) with ``provider: local``."""
        return None

    def use_local(self, address: str) -> None:  # noqa: B027 - optional hook
        """Point the sink at the local stand-in started for it."""

    async def provision(self, streams: list[str]) -> None:  # noqa: B027 - optional hook
        """Create what the run writes to (topics, streams, buckets), tagged with the run."""

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Remove what ``provision`` created, if the sink is marked ephemeral."""
