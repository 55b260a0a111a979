"""The ledger on SQLite and on the PostgreSQL server of this machine (asyncpg)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datafactory.control.ledger import Ledger, RunRecord, open_ledger
from datafactory.control.runs import RunManager, State

pytestmark = pytest.mark.integration
PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    url = f"sqlite:///{tmp_path}/l.db" if request.param == "sqlite" else PG
    led = open_ledger(url)
    await led.open()
    yield led
    await led.close()


def record(owner: str = "a") -> RunRecord:
    now = time.time()
    return RunRecord(
        id=uuid.uuid4().hex[:12],
        name="r",
        state="PENDING",
        config="run: {name: r}",
        config_hash="h",
        source="inline",
        created=now,
        updated=now,
        owner=owner,
    )


async def test_runs_history_checkpoints_and_counters_round_trip(ledger: Ledger) -> None:
    r = record()
    await ledger.create_run(r)
    await ledger.transition(r.id, "PENDING", "PROVISIONING", "start")
    await ledger.transition(r.id, "PROVISIONING", "RUNNING", "provisioned")
    key = ("retail.pos_transaction", "bus")
    await ledger.checkpoint(r.id, {"retail.pos_transaction": (100, 120)}, {key: {"acked": 100}})
    await ledger.checkpoint(  # an upsert, not a second row
        r.id, {"retail.pos_transaction": (250, 260)}, {key: {"acked": 250, "retried": 3}}
    )
    got = await ledger.get(r.id)
    assert got is not None and got.state == "RUNNING" and got.owner == "a"
    assert [(h["from"], h["to"]) for h in got.history] == [
        ("", "PENDING"),
        ("PENDING", "PROVISIONING"),
        ("PROVISIONING", "RUNNING"),
    ]
    assert await ledger.checkpoints(r.id) == {"retail.pos_transaction": (250, 260)}
    counters = await ledger.counters(r.id)
    assert counters[key]["acked"] == 250 and counters[key]["retried"] == 3
    assert counters[key]["sent"] == 0
    assert r.id in {x.id for x in await ledger.runs()}
    assert await ledger.get("nope") is None


async def test_several_daemons_open_one_postgres_ledger_at_once() -> None:
    ledgers = [open_ledger(PG) for _ in range(4)]
    await asyncio.gather(*(x.open() for x in ledgers))  # schema creation is serialised
    r = record()
    await ledgers[0].create_run(r)
    assert (await ledgers[3].get(r.id)) is not None
    await asyncio.gather(*(x.close() for x in ledgers))


SPEC = """
run: {{name: pg, seed: 1}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 2000}}}}
sinks:
  out: {{type: file, path: "{out}"}}
"""


async def test_a_daemon_on_postgres_resumes_only_its_own_runs(tmp_path: Path) -> None:
    a = RunManager(
        open_ledger(PG),
        owner=f"a-{uuid.uuid4().hex[:6]}",
        checkpoint_interval=0.2,
        data_root=tmp_path,
    )
    await a.start()
    run = await a.create(SPEC.format(out=tmp_path / "out"), "inline")
    while run.state != State.RUNNING:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    await a.close()  # drained, checkpointed, still live in the ledger
    other = RunManager(open_ledger(PG), owner="someone-else", data_root=tmp_path)
    assert run.id not in await other.start()
    await other.close()
    again = RunManager(open_ledger(PG), owner=a.owner, checkpoint_interval=0.2, data_root=tmp_path)
    assert run.id in await again.start()
    resumed = again.get(run.id)
    while resumed.state != State.RUNNING:
        await asyncio.sleep(0.05)
    await again.stop(run.id)
    await resumed.task  # type: ignore[misc]
    assert resumed.state == State.CANCELLED
    lines = sum(len(f.read_bytes().splitlines()) for f in (tmp_path / "out").rglob("*.jsonl"))
    counters = resumed.counters()[("retail.pos_transaction", "out")]
    assert counters["acked"] == lines > 2000
    await again.close()
