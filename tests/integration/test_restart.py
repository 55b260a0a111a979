"""kill -9, ten times, during a retail run of all five streams and an IoT run: each restart
continues the same business (the journal replayed), so every seq is there, every event sent
again is byte for byte its first copy, no entity is created twice, and the retail integrity
checks hold over everything written."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from datafactory.engine.identity import event_ids
from datafactory.pack import SEQ_SHARD_BITS
from tests.integration.test_daemon_process import Serve
from tests.retail_checks import by_time, check_money, check_references, check_stock

pytestmark = [pytest.mark.integration, pytest.mark.timed]

RETAIL = """
run: {{name: shop, seed: 21, duration: 50s}}
packs:
  retail:
    params: {{stores: 6, skus: 300, customers: 2000, return_rate: 0.1}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 1500}}}}
      return: {{}}
      inventory_movement: {{}}
      customer_event: {{}}
      price_change: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
engine: {{snapshot_interval: 4s}}
"""

IOT = """
run: {{name: fleet, seed: 22, duration: 50s}}
packs:
  iot:
    params: {{sites: 5, devices: 400, interval_scale: 0.2}}
sinks:
  out: {{type: file, path: "{out}"}}
engine: {{snapshot_interval: 4s}}
"""


def written(
    root: Path, seed: int, released: dict[str, int], parts: dict[str, list[int]] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every stream's events, once each; checks every copy of an event is the same bytes
    and every seq the stream released is there (``parts``: a sharded run's, per stream, each
    shard's count: shard i's seqs start at ``i << SEQ_SHARD_BITS``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for stream, n in released.items():
        pack, _, name = stream.partition(".")
        copies: dict[str, bytes] = {}
        lines = 0
        for f in sorted((root / pack / name).glob("*.jsonl")):
            for line in f.read_bytes().splitlines():
                lines += 1
                eid = orjson.loads(line)["event_id"]
                assert copies.setdefault(eid, line) == line, f"{stream} {eid}: sent unlike"
        counts = (parts or {}).get(stream, [n])
        seqs = np.concatenate(
            [
                np.arange(i << SEQ_SHARD_BITS, (i << SEQ_SHARD_BITS) + c)
                for i, c in enumerate(counts)
            ]
        )
        want = {b.decode() for b in event_ids(seed, stream, seqs).tolist()}
        assert copies.keys() == want, f"{stream}: {len(want - copies.keys())} missing"
        out[stream] = [orjson.loads(x) for x in copies.values()]
    return out


def test_ten_kill_9s_continue_the_same_retail_and_iot_business(tmp_path: Path) -> None:
    rng = random.Random(5)
    d = Serve(tmp_path, {"DATAFACTORY_STATE_DIR": str(tmp_path / "state")})
    (d.configs / "shop.yaml").write_text(RETAIL.format(out=tmp_path / "shop"))
    (d.configs / "fleet.yaml").write_text(IOT.format(out=tmp_path / "fleet"))
    d.start()
    try:
        shop = d.post("/v1/runs", {"config": "shop"})["id"]
        fleet = d.post("/v1/runs", {"config": "fleet"})["id"]
        for _ in range(10):
            d.wait(shop, lambda v: v["state"] == "RUNNING")
            d.wait(fleet, lambda v: v["state"] == "RUNNING")
            time.sleep(rng.uniform(1.0, 3.0))
            d.stop(signal.SIGKILL)
            d.start()
        views = [
            d.wait(r, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=120)
            for r in (shop, fleet)
        ]
    finally:
        d.stop()
    for v in views:
        assert v["state"] == "COMPLETED", (v, d.logs())
        restarts = [h for h in v["history"] if h["reason"] == "restart"]
        assert len(restarts) == 10
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert logs.count('"journal_replayed"') == 20  # each run, at each restart
    assert not list((tmp_path / "state" / "runs").rglob("*.jsonl"))  # over: journals gone

    shop_v, fleet_v = views
    retail = written(
        tmp_path / "shop", 21, {k: s["released"] for k, s in shop_v["streams"].items()}
    )
    resent = sum(
        1 for f in (tmp_path / "shop").rglob("*.jsonl") for _ in f.read_bytes().splitlines()
    ) - sum(map(len, retail.values()))
    assert resent > 0  # the restarts did send events again (and they were the same)
    streams = {k.partition(".")[2]: by_time(v) for k, v in retail.items()}
    assert len(streams["pos_transaction"]) > 20_000
    # nothing created twice: customers, listings, opening stock
    created = Counter(
        e["customer_id"] for e in streams["customer_event"] if e["event_type"] == "created"
    )
    assert len(created) >= 2000 and max(created.values()) == 1
    listed = Counter(c["sku"] for c in streams["price_change"] if c["change_type"] == "listed")
    assert len(listed) == 300 and max(listed.values()) == 1
    opening = Counter(
        (m["store_id"], m["sku"])
        for m in streams["inventory_movement"]
        if m["reason"] == "opening_stock"
    )
    assert opening and max(opening.values()) == 1
    assert check_references(streams) == (6, 300)
    check_money(streams)
    check_stock(streams)

    iot = written(tmp_path / "fleet", 22, {k: s["released"] for k, s in fleet_v["streams"].items()})
    registered = Counter(
        e["device_id"] for e in iot["iot.device_status"] if e["last_heartbeat_at"] is None
    )
    assert len(registered) == 400 and max(registered.values()) == 1
    readings: dict[str, list[int]] = defaultdict(list)
    for r in iot["iot.telemetry"]:
        readings[r["device_id"]].append(r["reading_seq"])
    assert len(readings) > 300
    for device, seqs in readings.items():  # each device's readings once (a restart did not
        assert len(set(seqs)) == len(seqs), device  # start its counter again)
