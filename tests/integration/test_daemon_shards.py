"""Sharded runs in a daemon's worker processes.

Killed with kill -9 four times: every shard goes on from its own marks with its own journal,
so every seq of every shard is there, every event sent again is byte for byte its first copy,
nothing is created twice, and the union of the shards passes the retail integrity checks.
A rate set through the API reaches every shard: the run follows it in total within 1 %."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_daemon_process import Serve
from tests.integration.test_restart import written
from tests.retail_checks import by_time, check_money, check_references, check_stock

pytestmark = [pytest.mark.integration, pytest.mark.timed]

RETAIL = """
run: {{name: shop, seed: 23, duration: 30s, shards: 3}}
packs:
  retail:
    params: {{stores: 6, skus: 300, customers: 1800, return_rate: 0.1}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 1200}}}}
      return: {{}}
      inventory_movement: {{}}
      customer_event: {{}}
      price_change: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
engine: {{snapshot_interval: 4s}}
"""


def test_kill_9s_of_a_daemon_running_shards_in_workers_lose_nothing(tmp_path: Path) -> None:
    rng = random.Random(8)
    env = {"DATAFACTORY_STATE_DIR": str(tmp_path / "state"), "DATAFACTORY_WORKERS": "2"}
    d = Serve(tmp_path, env)
    (d.configs / "shop.yaml").write_text(RETAIL.format(out=tmp_path / "shop"))
    d.start()
    try:
        shop = d.post("/v1/runs", {"config": "shop"})["id"]
        for _ in range(4):
            d.wait(shop, lambda v: v["state"] == "RUNNING")
            time.sleep(rng.uniform(1.5, 3.0))
            d.stop(signal.SIGKILL)
            d.start()
        v = d.wait(shop, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=120)
    finally:
        d.stop()
    assert v["state"] == "COMPLETED", (v, d.logs())
    assert len([h for h in v["history"] if h["reason"] == "restart"]) == 4
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert logs.count('"journal_replayed"') == 4 * 3  # each shard, at each restart
    assert not list((tmp_path / "state" / "runs").rglob("*.jsonl"))  # over: journals gone

    shards = v["shards"]
    assert sorted(shards) == ["0", "1", "2"]
    parts = {
        stream: [shards[str(i)]["streams"][stream]["released"] for i in range(3)]
        for stream in v["streams"]
    }
    released = {k: s["released"] for k, s in v["streams"].items()}
    assert all(sum(p) == released[k] for k, p in parts.items())
    retail = written(tmp_path / "shop", 23, released, parts)
    resent = sum(
        1 for f in (tmp_path / "shop").rglob("*.jsonl") for _ in f.read_bytes().splitlines()
    ) - sum(map(len, retail.values()))
    assert resent > 0  # the restarts did send events again (and they were the same)
    streams = {k.partition(".")[2]: by_time(x) for k, x in retail.items()}
    assert len(streams["pos_transaction"]) > 15_000
    created = Counter(
        e["customer_id"] for e in streams["customer_event"] if e["event_type"] == "created"
    )
    assert len(created) >= 1800 and max(created.values()) == 1
    listed = Counter(c["sku"] for c in streams["price_change"] if c["change_type"] == "listed")
    assert len(listed) == 300 and max(listed.values()) == 1
    assert check_references(streams) == (6, 300)
    check_money(streams)
    check_stock(streams)


def test_a_rate_set_through_the_api_is_followed_in_total_by_the_shards(tmp_path: Path) -> None:
    env = {"DATAFACTORY_STATE_DIR": str(tmp_path / "state"), "DATAFACTORY_WORKERS": "2"}
    d = Serve(tmp_path, env)
    cfg = RETAIL.replace("duration: 30s", "duration: 60s")
    (d.configs / "shop.yaml").write_text(cfg.format(out=tmp_path / "shop"))
    d.start()
    try:
        rid = d.post("/v1/runs", {"config": "shop"})["id"]
        d.wait(rid, lambda v: v["state"] == "RUNNING")
        time.sleep(2)
        path = f"/v1/runs/{rid}/streams/pos_transaction/rate"
        d.post(path, {"profile": {"profile": "constant", "base": 2500}}, method="PUT")
        time.sleep(3)  # the change applies at each shard's next slice
        pos = "retail.pos_transaction"

        def shards() -> dict[str, Any]:
            v: dict[str, Any] = d.get(f"/v1/runs/{rid}")["shards"]
            return v

        before = shards()
        target = sum(s["streams"][pos]["target_rate"] for s in before.values())
        assert abs(target - 2500) < 1e-6 * 2500  # the shards' shares add up to the whole
        time.sleep(30)
        after = shards()
        # each shard's count at the time its status was taken (a worker's is up to 0.5 s old)
        rate = sum(
            (after[i]["streams"][pos]["released"] - before[i]["streams"][pos]["released"])
            / (after[i]["at"] - before[i]["at"])
            for i in before
        )
        assert abs(rate - 2500) <= 0.01 * 2500, rate
    finally:
        d.stop()
