"""Writes to a sink, tried again: connects and batch writes with capped, jittered backoff.

A partial failure (:class:`PartialDeliveryError`) retries only the records that failed, and
counts those no retry can deliver as failed at once; a sink that lost its connection is
connected again before the next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from datafactory.encoders.base import EncodedBatch, PartialDeliveryError
from datafactory.runtime.accounting import Outcome
from datafactory.sinks.base import NotConnectedError, Sink

log = structlog.get_logger("datafactory.delivery")


@dataclass(frozen=True, slots=True)
class Retry:
    """How a sink's failed connects and writes are tried again."""

    attempts: int
    backoff: float
    backoff_max: float

    async def wait(self, delay: float) -> float:
        """Wait about ``delay`` (jittered: timing only, never data); the next, doubled, capped."""
        await asyncio.sleep(delay * (0.5 + random.random() / 2))
        return min(delay * 2, self.backoff_max)


async def connect(sink: Sink, retry: Retry, on_error: Callable[[], None]) -> None:
    delay = retry.backoff
    for attempt in range(1, retry.attempts + 1):
        try:
            await sink.connect()
            return
        except Exception as e:
            on_error()
            log.warning("sink_connect_failed", sink=sink.name, attempt=attempt, error=repr(e))
            if attempt == retry.attempts:
                raise
            delay = await retry.wait(delay)


async def deliver(
    sink: Sink, batch: EncodedBatch, retry: Retry, on_error: Callable[[], None]
) -> Outcome:
    """One batch; partial failures retry only the rest."""
    delay = retry.backoff
    out = Outcome()
    current = batch
    for attempt in range(1, retry.attempts + 1):
        try:
            await sink.write_batch(current)
            out.acked += len(current)
            return out
        except PartialDeliveryError as e:
            out.acked += len(current) - int(e.failed.sum())
            out.failed += int(e.permanent.sum())
            current = current.subset(e.failed & ~e.permanent)
            error: Exception = e
            if len(current) == 0:
                return out
        except Exception as e:
            error = e
        on_error()
        log.warning(
            "sink_write_failed",
            sink=sink.name,
            stream=batch.stream,
            attempt=attempt,
            events=len(current),
            error=repr(error),
        )
        if attempt == retry.attempts:
            break
        out.retried += len(current)
        delay = await retry.wait(delay)
        if isinstance(error, NotConnectedError):
            with contextlib.suppress(Exception):
                await sink.connect()
    log.error("sink_batch_failed", sink=sink.name, stream=batch.stream, events=len(current))
    out.failed += len(current)
    return out
