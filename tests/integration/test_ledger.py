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


async def test_shard_leases_one_holder_take_over_after_expiry_and_fencing(ledger: Ledger) -> None:
    """Shard leases: a shard has one holder at a time, a take-over raises the epoch, and the
    old holder can neither renew nor move a checkpoint mark (on both databases)."""
    from datafactory.control import leases
    from datafactory.control.ledger import Fenced

    r = record(owner="")
    await ledger.create_run(r)
    await leases.open_shards(ledger, r.id, 4)
    await leases.open_shards(ledger, r.id, 4)  # again: nothing changes
    a = await leases.claim(ledger, r.id, "daemon-a", ttl=0.5, most=3)
    b = await leases.claim(ledger, r.id, "daemon-b", ttl=30)
    assert [x.shard for x in a] == [0, 1, 2] and [x.shard for x in b] == [3]
    assert await leases.claim(ledger, r.id, "daemon-c", ttl=30) == []  # all held
    # two daemons race for the same expired shards: each shard goes to exactly one
    await asyncio.sleep(0.7)
    other = open_ledger(ledger.url)  # another daemon's own connections
    await other.open()
    try:
        c, d = await asyncio.gather(
            leases.claim(ledger, r.id, "daemon-c", ttl=30),
            leases.claim(other, r.id, "daemon-d", ttl=30),
        )
    finally:
        await other.close()
    taken = sorted(x.shard for x in c + d)
    assert taken == [0, 1, 2]
    assert all(x.epoch == 2 for x in c + d)
    # daemon-a comes back: its leases are gone, its checkpoint is refused whole
    old = a[0]
    assert not await leases.renew(ledger, old, 30)
    key = ("retail.pos_transaction#0", "bus")
    with pytest.raises(Fenced):
        await ledger.checkpoint(
            r.id, {"retail.pos_transaction#0": (999, 999)}, {key: {"acked": 999}},
            fence=leases.renewal(old, await ledger.now() + 30),
        )  # fmt: skip
    assert "retail.pos_transaction#0" not in await ledger.checkpoints(r.id)
    holder = next(x for x in c + d if x.shard == 0)
    await ledger.checkpoint(
        r.id, {"retail.pos_transaction#0": (50, 60)}, {key: {"acked": 50}},
        fence=leases.renewal(holder, await ledger.now() + 30),
    )  # fmt: skip
    assert (await ledger.checkpoints(r.id))["retail.pos_transaction#0"] == (50, 60)
    # a finished shard is nobody's to take again
    assert await leases.release(ledger, holder, done=True)
    assert not await leases.release(ledger, old)
    rows = {x.shard: x for x in await leases.shards(ledger, r.id)}
    assert rows[0].state == "done" and rows[0].owner == ""
    await asyncio.sleep(0.1)
    assert 0 not in [x.shard for x in await leases.claim(ledger, r.id, "daemon-e", ttl=1)]
