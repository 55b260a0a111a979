"""Helpers for the integration tier (the services themselves are in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def consume(
    bootstrap: str, topic: str, expect: int, quiet: float = 3.0, deadline: float = 60.0
) -> list[Any]:
    """Every message of ``topic``: read until ``expect`` arrived, or nothing came for
    ``quiet`` seconds (Tansu's end offsets stop early, so never trust watermarks)."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await c.start()
    out: list[Any] = []
    try:
        start = last = time.monotonic()
        while time.monotonic() - start < deadline:
            got = await c.getmany(timeout_ms=300, max_records=10_000)
            n = sum(len(v) for v in got.values())
            for msgs in got.values():
                out += msgs
            now = time.monotonic()
            if n:
                last = now
            if len(out) >= expect and now - last > 0.5:
                break
            if now - last > quiet:
                break
    finally:
        await c.stop()
    return out


def run(coro: Any) -> Any:
    return asyncio.get_event_loop().run_until_complete(coro)
