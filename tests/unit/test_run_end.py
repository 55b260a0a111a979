"""What a pack did with an event (a sale's stock movement) matches the event as released, to the
run's very end: the last slice holds what was due after the end at the end itself and the
streams the pack drives release up to and including it; a pause (or a skip, or a new rate)
never moves an event already made, so its side effects keep its time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from datafactory.config import parse_config
from datafactory.runtime.engine import Engine
from tests.retail_checks import by_time, check_references, check_stock

CFG = """
run: {{name: end, seed: 5, {clock}duration: {seconds}s}}
packs:
  retail:
    params: {{stores: 2, skus: 40, customers: 200}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}}}
      return: {{}}
      inventory_movement: {{}}
      customer_event: {{}}
      price_change: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
telemetry: {{enabled: false}}
"""
STREAMS = ("pos_transaction", "return", "inventory_movement", "customer_event", "price_change")


def rows(root: Path, stream: str) -> list[dict[str, Any]]:
    return by_time(
        [
            orjson.loads(x)
            for f in sorted((root / "retail" / stream).glob("*.jsonl"))
            for x in f.read_bytes().splitlines()
        ]
    )


def check(out: Path) -> dict[str, list[dict[str, Any]]]:
    streams = {s: rows(out, s) for s in STREAMS}
    check_references(streams)
    check_stock(streams)  # every sale's movement, no movement without its sale
    return streams


async def test_the_last_sales_of_a_run_have_their_stock_movements(tmp_path: Path) -> None:
    out = tmp_path / "out"
    clock = "clock: simulated, start: 2026-03-01T00:00:00Z, "
    await Engine(parse_config(CFG.format(clock=clock, seconds=20, rate=100, out=out))).run()
    streams = check(out)
    assert len(streams["pos_transaction"]) == 2000
    assert streams["pos_transaction"][-1]["event_time"] >= "2026-03-01T00:00:19.99"


async def test_a_pause_does_not_move_the_sales_already_made(tmp_path: Path) -> None:
    """Paused for 1.5 s of a 4 s run: the sales made before the pause keep their times (it
    moved them, their movements did not: the run's last 1.5 s of movements had no sales)."""
    out = tmp_path / "out"
    e = Engine(parse_config(CFG.format(clock="", seconds=4, rate=200, out=out)))
    task = asyncio.create_task(e.run())
    await asyncio.sleep(1.0)
    e.pause()
    await asyncio.sleep(1.5)
    e.resume()
    await task
    streams = check(out)
    assert 300 < len(streams["pos_transaction"]) < 650  # the pause earned nothing
