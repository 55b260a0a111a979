"""A restarted run continues the same simulation: it replays its journal (from a snapshot), so
the events after each stream's checkpoint mark come out again byte for byte, the run goes on
from where it was, and nothing is created twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.control.journal_ledger import LedgerStore
from datafactory.control.ledger import open_ledger
from datafactory.encoders.base import EncodedBatch
from datafactory.runtime.engine import Engine
from datafactory.runtime.journal import Store
from datafactory.sinks.base import Sink, SinkContext

CFG = """
run: {{name: journal, seed: 9}}
packs:
  retail:
    params: {{stores: 6, skus: 300, customers: 2000, return_rate: 0.2}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 3000}}}}
      return: {{}}
      inventory_movement: {{}}
      customer_event: {{}}
      price_change: {{}}
sinks:
  out: {{type: stdout}}
engine: {{block_size: 1024, batch_max: 512, pacing_interval: 20ms, snapshot_interval: 1s}}
telemetry: {{enabled: false}}
"""


class Recorder(Sink):
    Config: Any = None

    def __init__(self, name: str, config: Any, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        self.got: list[tuple[str, int, bytes]] = []

    async def connect(self) -> None:
        pass

    async def write_batch(self, batch: EncodedBatch) -> None:
        for s, r in zip(batch.seqs().tolist(), batch.records(), strict=True):
            self.got.append((batch.stream, s, bytes(r)))

    async def close(self) -> None:
        pass


def engine(folder: Path | Store, resume: dict[str, int] | None = None) -> tuple[Engine, Recorder]:
    rec: list[Recorder] = []

    def factory(name: str, cfg: Any, ctx: SinkContext) -> Sink:
        rec.append(Recorder(name, cfg, ctx))
        return rec[0]

    e = Engine(parse_config(CFG.format()), sink_factory=factory, journal=folder, resume=resume)
    return e, rec[0]


async def run_for(e: Engine, seconds: float, at: float | None = None) -> dict[str, int]:
    """Run ``e`` for ``seconds``; the marks it had at ``at`` seconds (a checkpoint)."""
    task = asyncio.create_task(e.run())
    marks: dict[str, int] = {}
    if at is not None:
        await asyncio.sleep(at)
        marks = {k: m for k, (m, _) in e.marks().items()}
        e.checkpointed(marks)
        await asyncio.sleep(seconds - at)
    else:
        await asyncio.sleep(seconds)
    e.stop()
    await task
    return marks


@pytest.mark.parametrize("where", ["folder", "ledger"])
async def test_a_restart_replays_the_journal_and_sends_the_same_events_again(
    tmp_path: Path, where: str
) -> None:
    """In a folder (a daemon's own run) or in the ledger (a shard any daemon may take over:
    the second engine reads only what the ledger holds)."""
    folder = tmp_path / "journal"
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    await ledger.open()

    async def store() -> Path | Store:
        if where == "folder":
            return folder
        s = LedgerStore(ledger, "run-1", 0)
        await s.load()
        return s

    first, a = engine(await store())
    marks = await run_for(first, 3.2, at=2.5)
    if where == "folder":
        assert (folder / "snapshot-2.state").exists()  # snapshots were taken (every second)
    else:
        snaps = await ledger._fetch("SELECT part FROM journal_snapshots")
        assert len(snaps) >= 2 and not folder.exists()
    released = {s.name: s.released for s in first.streams}
    assert all(released[k] > marks[k] for k in ("retail.pos_transaction",))

    # the restart: from the checkpoint's marks, which are behind what was released
    second, b = engine(await store(), resume=marks)
    assert second.journal is not None and second.journal.exists()
    await run_for(second, 1.5)
    await ledger.close()

    seen_a = {(st, s): r for st, s, r in a.got}
    seen_b: dict[tuple[str, int], bytes] = {}
    for st, s, r in b.got:
        seen_b.setdefault((st, s), r)
    # everything sent again is byte for byte the first copy
    both = seen_a.keys() & seen_b.keys()
    assert len(both) >= sum(released[k] - marks[k] for k in released) > 0
    assert all(seen_a[k] == seen_b[k] for k in both)
    for stream in released:
        mine_b = [s for st, s, _ in b.got if st == stream]
        if mine_b:  # the restart starts at the mark (a stream with nothing after it: none)
            assert min(mine_b) == marks[stream], stream
        seqs = {s for st, s in seen_a.keys() | seen_b.keys() if st == stream}
        assert seqs == set(range(len(seqs))), stream  # nothing missing, nothing skipped
    # the restart went on with the same business: no customer is created twice, no
    # transaction id is used by two different events
    events = {**seen_a, **seen_b}
    created = Counter(
        orjson.loads(r)["customer_id"]
        for (st, _), r in events.items()
        if st == "retail.customer_event" and orjson.loads(r)["event_type"] == "created"
    )
    assert created and max(created.values()) == 1
    sales = Counter(
        orjson.loads(r)["transaction_id"]
        for (st, _), r in events.items()
        if st == "retail.pos_transaction"
    )
    assert max(sales.values()) == 1
    assert max(s for st, s in events if st == "retail.pos_transaction") > max(
        s for st, s in seen_a if st == "retail.pos_transaction"
    )  # and it went on past where the first process stopped


async def test_without_a_journal_a_resume_starts_from_the_marks(tmp_path: Path) -> None:
    e, rec = engine(tmp_path / "none", resume={"retail.pos_transaction": 500})
    await run_for(e, 0.5)
    pos = [s for st, s, _ in rec.got if st == "retail.pos_transaction"]
    assert pos and min(pos) == 500
