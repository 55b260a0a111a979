"""The sink contract (Benthos ``BatchOutput``): connect, write_batch, close, healthcheck.

Sinks never sleep-retry on their own hot path: a sink that lost its connection raises
:class:`NotConnectedError` and the engine reconnects with backoff. ``max_in_flight`` says how
many ``write_batch`` calls the engine may have outstanding at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import Field

from datafactory.config import SinkBase
from datafactory.encoders.base import EncodedBatch
from datafactory.pack import Shard
from datafactory.units import Duration


class ProvisionedConfig(SinkBase):
    """Settings of sinks that create what they write to (topics, streams, buckets)."""

    ephemeral: bool = Field(False, description="delete what the run created when it ends")
    ttl: Duration | None = Field(
        None,
        gt=0,
        description="what the run created expires this long after creation: `datafactory reap`"
        " (and every later run's start) deletes it if it is still there, e.g. after a crash",
        examples=["6h"],
    )


class NotConnectedError(ConnectionError):
    """The sink is not (or no longer) connected; the engine reconnects and retries."""


class SinkContext:
    """What a sink may know about the run it serves."""

    __slots__ = ("run_name", "run_seed", "shard")

    def __init__(self, run_name: str, run_seed: int, shard: Shard | None = None) -> None:
        self.run_name = run_name
        self.run_seed = run_seed
        self.shard = shard or Shard()  # the part of a sharded run this sink writes for

    @property
    def label(self) -> str:
        """The run's name, and the shard's index when the run has several (client ids)."""
        n = self.shard
        return self.run_name if n.count == 1 else f"{self.run_name}-shard{n.index}"


class Sink(ABC):
    Config: ClassVar[type[SinkBase]]
    max_in_flight: int = 1
    # the largest record the target accepts (None: no limit); chaos `oversize` goes beyond it
    max_record_bytes: int | None = None
    # message sinks (one record per message) frame Avro as single-object encoding
    message_oriented: ClassVar[bool] = False

    def __init__(self, name: str, config: SinkBase, ctx: SinkContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        self.created: list[str] = []  # resources provision() created (topics, streams, buckets)

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

    async def delete_resources(self, names: list[str]) -> None:  # noqa: B027 - optional hook
        """Delete these resources (topics, streams, buckets) of this sink's service."""

    async def release(self) -> None:  # noqa: B027 - optional hook
        """Drop clients opened for provisioning or teardown."""

    def reconnect_config(self) -> dict[str, Any]:
        """This sink's config with the address it really used (for a later reaper)."""
        return self.config.model_dump()

    async def teardown(self) -> None:
        """Remove what ``provision`` created, if the sink is marked ephemeral."""
        if getattr(self.config, "ephemeral", False) and self.created:
            await self.delete_resources(self.created)
            self.created = []
        await self.release()
