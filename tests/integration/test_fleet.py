"""One sharded run spread over three daemon processes that share the machine's PostgreSQL, writing
to Tansu. One daemon is killed with kill -9 mid-run: within a lease period its shards run on
the others, from its checkpoints and its journal in the ledger. At the end every seq of every
shard is in Kafka, every copy of an event is the same bytes, only the killed daemon's shards
have duplicates, and the union of the shards passes the retail integrity checks."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from datafactory.engine.identity import event_ids
from datafactory.lifecycle.local import Tansu
from datafactory.pack import SEQ_SHARD_BITS, Shard
from datafactory.verify.sources import read_kafka
from tests.integration.test_daemon_process import Serve
from tests.retail_checks import by_time, check_money, check_references, check_stock

pytestmark = [pytest.mark.integration, pytest.mark.timed]
SHARDS = 6

RETAIL = """
run: {{name: fleet{uid}, seed: 31, duration: 36s, shards: {shards}}}
packs:
  retail:
    params: {{stores: 12, skus: 200, customers: 2400, return_rate: 0.1}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 600}}}}
      return: {{}}
      inventory_movement: {{}}
      customer_event: {{}}
      price_change: {{}}
sinks:
  bus: {{type: kafka, bootstrap: "{bootstrap}", topic: "fleet-{uid}.{{stream}}", partitions: 2}}
engine: {{snapshot_interval: 3s}}
"""


def daemons(tmp: Path, url: str, n: int) -> list[Serve]:
    out = []
    for k in range(n):
        home = tmp / f"d{k}"
        home.mkdir()
        env = {
            "DATAFACTORY_STATE_DIR": str(home / "state"),
            "DATAFACTORY_OWNER": f"d{k}",
            "DATAFACTORY_LEASE_SECONDS": "4",
            "DATAFACTORY_STATE_KEY": "the fleet's shared state key",
        }
        out.append(Serve(home, env, ledger=url))
    return out


def held(d: Serve, rid: str) -> list[str]:
    v: dict[str, Any] = d.get(f"/v1/runs/{rid}")
    return sorted(v.get("shards", {}))


def test_a_sharded_run_on_three_daemons_survives_a_kill_9_of_one(
    tmp_path: Path, tansu: Tansu, database: str
) -> None:
    uid = uuid.uuid4().hex[:6]
    ds = daemons(tmp_path, database, 3)
    (ds[0].configs / "shop.yaml").write_text(
        RETAIL.format(uid=uid, shards=SHARDS, bootstrap=tansu.bootstrap)
    )
    for d in ds:
        d.start()
    try:
        rid = ds[0].post("/v1/runs", {"config": "shop"})["id"]
        # every daemon takes its share: two shards each
        deadline = time.monotonic() + 30
        while True:
            spread = [held(d, rid) if _knows(d, rid) else [] for d in ds]
            if sorted(x for s in spread for x in s) == [str(i) for i in range(SHARDS)]:
                break
            assert time.monotonic() < deadline, (spread, ds[0].logs())
            time.sleep(0.5)
        assert [len(s) for s in spread] == [2, 2, 2], spread
        time.sleep(8)
        victim = ds[1]
        lost = spread[1]
        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        # within a lease period (4 s) and a claim round, the others run its shards
        while True:
            now = sorted(x for d in (ds[0], ds[2]) for x in held(d, rid))
            if now == [str(i) for i in range(SHARDS)]:
                break
            assert time.monotonic() - killed_at < 15, (now, ds[0].logs())
            time.sleep(0.25)
        took_over = time.monotonic() - killed_at
        v = ds[0].wait(rid, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=120)
        assert v["state"] == "COMPLETED", (v, ds[0].logs())
        marks = asyncio.run(_checkpoints(database, rid))
    finally:
        for d in ds:
            d.stop()
    assert took_over < 12

    events, resent, duplicated_shards = read_back(tansu, uid, marks, SHARDS)
    # events after the killed daemon's marks were sent again: only its shards have any
    assert resent > 0
    assert duplicated_shards <= {int(x) for x in lost}, (duplicated_shards, lost)

    assert len(events["pos_transaction"]) > 15_000
    created = Counter(
        e["customer_id"] for e in events["customer_event"] if e["event_type"] == "created"
    )
    assert len(created) >= 2400 and max(created.values()) == 1
    assert check_references(events) == (12, 200)
    check_money(events)
    check_stock(events)


def read_back(
    tansu: Tansu, uid: str, marks: dict[str, tuple[int, int]], count: int
) -> tuple[dict[str, list[dict[str, Any]]], int, set[int]]:
    """Every stream's events from Kafka, once each (every copy the same bytes, every seq each
    shard released there); how many copies were sent again, and by which shards."""
    released: dict[str, list[int]] = {}
    for key, (_, n) in marks.items():
        stream, _, shard = key.rpartition("#")
        released.setdefault(stream, [0] * count)[int(shard)] = n
    events: dict[str, list[dict[str, Any]]] = {}
    duplicated_shards: set[int] = set()
    resent = 0
    for stream, parts in released.items():
        msgs = asyncio.run(
            read_kafka(tansu.bootstrap, f"fleet-{uid}.{stream.partition('.')[2]}", quiet=5)
        )
        copies: dict[str, bytes] = {}
        seen: Counter[str] = Counter()
        for m in msgs:
            assert m.value is not None
            eid = orjson.loads(m.value)["event_id"]
            seen[eid] += 1
            assert copies.setdefault(eid, m.value) == m.value, f"{stream} {eid}: sent unlike"
        seqs = np.concatenate(
            [np.arange(Shard(i, count).seq_base, Shard(i, count).seq_base + c)
             for i, c in enumerate(parts)]
        )  # fmt: skip
        ids = [b.decode() for b in event_ids(31, stream, seqs).tolist()]
        shard_of = dict(zip(ids, (int(s) >> SEQ_SHARD_BITS for s in seqs.tolist()), strict=True))
        missing = set(ids) - copies.keys()
        assert not missing, f"{stream}: {len(missing)} missing of {len(ids)}"
        assert copies.keys() == set(ids)
        for eid, c in seen.items():
            if c > 1:
                resent += c - 1
                duplicated_shards.add(shard_of[eid])
        events[stream.partition(".")[2]] = by_time([orjson.loads(x) for x in copies.values()])
    return events, resent, duplicated_shards


def test_a_daemon_that_joins_takes_shards_given_back_by_a_rebalance(
    tmp_path: Path, tansu: Tansu, database: str
) -> None:
    uid = uuid.uuid4().hex[:6]
    first, second = daemons(tmp_path, database, 2)
    cfg = RETAIL.format(uid=uid, shards=4, bootstrap=tansu.bootstrap)
    (first.configs / "shop.yaml").write_text(cfg.replace("duration: 36s", "duration: 24s"))
    first.start()
    try:
        rid = first.post("/v1/runs", {"config": "shop"})["id"]
        wait_for(lambda: held(first, rid) == ["0", "1", "2", "3"], first)  # alone: all four
        second.start()
        time.sleep(3)  # it says it is alive; the shards are all held: it takes none
        assert not _knows(second, rid) or held(second, rid) == []
        first.post(f"/v1/runs/{rid}/rebalance")
        wait_for(lambda: len(held(first, rid)) == 2 and len(held(second, rid)) == 2, first)
        v = first.wait(rid, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=120)
        assert v["state"] == "COMPLETED", (v, first.logs())
        marks = asyncio.run(_checkpoints(database, rid))
    finally:
        first.stop()
        second.stop()
    events, _, _ = read_back(tansu, uid, marks, 4)
    assert check_references(events) == (12, 200)
    check_money(events)
    check_stock(events)


def test_a_rate_set_through_one_daemon_is_followed_in_total_by_every_daemons_shards(
    tmp_path: Path, tansu: Tansu, database: str
) -> None:
    uid = uuid.uuid4().hex[:6]
    ds = daemons(tmp_path, database, 2)
    cfg = RETAIL.format(uid=uid, shards=4, bootstrap=tansu.bootstrap)
    (ds[0].configs / "shop.yaml").write_text(cfg.replace("duration: 36s", "duration: 60s"))
    for d in ds:
        d.start()
    try:
        time.sleep(2)  # both have said they are alive: two shards each
        rid = ds[0].post("/v1/runs", {"config": "shop"})["id"]
        wait_for(lambda: [len(held(d, rid)) if _knows(d, rid) else 0 for d in ds] == [2, 2], ds[0])
        path = f"/v1/runs/{rid}/streams/pos_transaction/rate"
        ds[0].post(path, {"profile": {"profile": "constant", "base": 1500}}, method="PUT")
        pos = "retail.pos_transaction"

        def shards() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for d in ds:
                out.update(d.get(f"/v1/runs/{rid}")["shards"])
            return out

        def target() -> float:
            return float(sum(s["streams"][pos]["target_rate"] for s in shards().values()))

        # the other daemon follows the run's config in the ledger (a round of the fleet)
        wait_for(lambda: abs(target() - 1500) < 1e-6 * 1500, ds[1])
        time.sleep(2)  # each shard's next slice is at the new rate
        before = shards()
        time.sleep(30)
        after = shards()
        rate = sum(
            (after[i]["streams"][pos]["released"] - before[i]["streams"][pos]["released"])
            / (after[i]["at"] - before[i]["at"])
            for i in before
        )
        assert {s["daemon"] for s in after.values()} == {"d0", "d1"}
        assert abs(rate - 1500) <= 0.01 * 1500, rate
    finally:
        for d in ds:
            d.stop()


SIMULATED = """
run: {{name: same{n}, seed: 21, clock: simulated, start: 2026-03-02T00:00:00Z, duration: 4d,
      shards: 3}}
packs:
  retail:
    params: {{stores: 6, skus: 300, customers: 1800, expected_daily_transactions: 900,
              price_change_rate: 6, promo_days: 3, return_rate: 0.05}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 0.012}}}}
      return: {{}}
      inventory_movement: {{}}
      customer_event: {{}}
      price_change: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
"""


STREAMS_PER_SHARD = ("pos_transaction", "inventory_movement", "customer_event", "return")


def test_the_same_seed_and_shards_give_the_same_data_per_shard_on_1_2_or_3_daemons(
    tmp_path: Path, database: str
) -> None:
    """Whichever daemons run a sharded run's shards, each shard's events are the same."""
    per_shard: dict[int, dict[int, dict[str, list[bytes]]]] = {}
    ran_on: dict[int, int] = {}
    for n in (1, 2, 3):
        (tmp_path / f"fleet{n}").mkdir()
        ds = daemons(tmp_path / f"fleet{n}", database, n)
        out = tmp_path / f"out{n}"
        (ds[0].configs / "same.yaml").write_text(SIMULATED.format(n=n, out=out))
        for d in ds:
            d.start()
        try:
            if n > 1:  # every daemon has said it is alive: each takes its fair share
                time.sleep(2)
            rid = ds[0].post("/v1/runs", {"config": "same"})["id"]
            v = ds[0].wait(rid, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=180)
            assert v["state"] == "COMPLETED", (v, ds[0].logs())
        finally:
            for d in ds:
                d.stop()
        ran_on[n] = sum(any("shard_taken" in x.read_text() for x in d.tmp.glob("serve-*.log"))
                        for d in ds)  # fmt: skip
        per_shard[n] = {
            shard: {
                stream.name: sorted(
                    line
                    for f in sorted(stream.glob(f"same{n}-shard{shard}-*.jsonl"))
                    for line in f.read_bytes().splitlines()
                )
                for stream in sorted((out / "retail").iterdir())
            }
            for shard in range(3)
        }
    assert ran_on[1] == 1 and ran_on[3] >= 2, ran_on  # the run was spread over daemons
    for shard in range(3):
        one = per_shard[1][shard]
        counts = {k: len(v) for k, v in one.items()}
        assert len(one) == 5 and all(counts[k] for k in STREAMS_PER_SHARD), counts
        for n in (2, 3):
            assert per_shard[n][shard] == one, (n, shard)


def test_a_run_whose_creator_died_while_provisioning_is_adopted(
    tmp_path: Path, database: str
) -> None:
    """The creator moved the run to PROVISIONING and died before opening its shards: another
    daemon finishes the job after two lease periods, and the run completes."""
    from datafactory.control.ledger import RunRecord, open_ledger
    from datafactory.control.runs import config_hash

    text = SIMULATED.format(n=0, out=tmp_path / "out").replace("duration: 4d", "duration: 1d")
    (d,) = daemons(tmp_path, database, 1)

    async def half_made() -> str:
        led = open_ledger(database)
        await led.open()
        try:
            then = await led.now() - 60
            rec = RunRecord("r-orphan", "same0", "PROVISIONING", text, config_hash(text),
                            "inline", then, then, owner="a-daemon-gone-for-good")  # fmt: skip
            await led.create_run(rec)
            return rec.id
        finally:
            await led.close()

    rid = asyncio.run(half_made())
    d.start()
    try:
        v = d.wait(rid, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=120)
        assert v["state"] == "COMPLETED", (v, d.logs())
        assert "fleet_run_adopted" in d.logs() or any(
            "fleet_run_adopted" in x.read_text() for x in d.tmp.glob("serve-*.log")
        )
    finally:
        d.stop()
    shards = {p.name.split("-shard")[1][0] for p in (tmp_path / "out").rglob("*.jsonl")}
    assert shards == {"0", "1", "2"}


def wait_for(pred: Any, d: Serve, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if pred():
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, d.logs()
        time.sleep(0.25)


def _knows(d: Serve, rid: str) -> bool:
    try:
        d.get(f"/v1/runs/{rid}")
        return True
    except OSError:
        return False


async def _checkpoints(url: str, rid: str) -> dict[str, tuple[int, int]]:
    from datafactory.control.ledger import open_ledger

    led = open_ledger(url)
    await led.open()
    try:
        return await led.checkpoints(rid)
    finally:
        await led.close()
