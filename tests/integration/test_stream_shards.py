"""A stream run in shards, through the CLI in worker processes: the union of the shards is one
business (the retail integrity checks pass over it, ids are unique, each shard has its own seq
space), the same seed and shard count give the same data per shard whatever the workers, and
the shards' rates add up to the profile."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from datafactory.engine.identity import event_ids
from datafactory.pack import SEQ_SHARD_BITS
from tests.retail_checks import by_time, check_money, check_references, check_stock

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "datafactory"]
STREAMS = ("pos_transaction", "return", "inventory_movement", "customer_event", "price_change")
CFG = """
run: {{name: shards, seed: 21, clock: simulated, start: 2026-03-02T00:00:00Z, duration: 5d,
      shards: {shards}}}
packs:
  retail:
    params: {{stores: 6, skus: 300, customers: 1800, expected_daily_transactions: 900,
              churn_rate: 0.6, winback_rate: 0.5, acquisition_rate: 0.5,
              price_change_rate: 6, promo_days: 3, return_rate: 0.05}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 0.012}}}}
      return: {{}}
      inventory_movement: {{}}
      customer_event: {{}}
      price_change: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
manifest: {{sink: {{type: file, path: "{out}"}}}}
telemetry: {{enabled: false}}
"""


def run(tmp: Path, name: str, shards: int, workers: int) -> Path:
    out = tmp / name
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(CFG.format(out=out, shards=shards))
    r = subprocess.run(
        [*CLI, "run", str(cfg), "--workers", str(workers), "--json"],
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    (tmp / f"{name}.json").write_bytes(r.stdout)  # the run's account
    v = subprocess.run([*CLI, "verify", str(cfg)], capture_output=True, timeout=300)
    assert v.returncode == 0, v.stdout.decode()[-3000:] + v.stderr.decode()[-2000:]
    return out


def rows(out: Path, stream: str, shard: int | None = None) -> list[dict[str, Any]]:
    pattern = "*.jsonl" if shard is None else f"shards-shard{shard}-*.jsonl"
    return [
        orjson.loads(x)
        for f in sorted((out / "retail" / stream).glob(pattern))
        for x in f.read_bytes().splitlines()
    ]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("shards")
    return {
        "one": run(tmp, "one", 1, 1),
        "w1": run(tmp, "w1", 3, 1),
        "w2": run(tmp, "w2", 3, 2),
    }


def test_the_union_of_the_shards_is_one_consistent_business(outputs: dict[str, Path]) -> None:
    out = outputs["w2"]
    streams = {name: by_time(rows(out, name)) for name in STREAMS}
    assert check_references(streams) == (6, 300)
    assert check_money(streams) > 300  # lines on promotion, priced as the promotion says
    check_stock(streams)
    for name in STREAMS:  # ids unique across shards; every seq in its shard's own space
        ids = [r["event_id"] for r in streams[name]]
        assert len(ids) == len(set(ids)), name
    created = Counter(
        r["customer_id"] for r in streams["customer_event"] if r["event_type"] == "created"
    )
    assert created and max(created.values()) == 1  # no customer made twice, by two shards
    for shard in range(3):  # shard i's events are seqs i << SEQ_SHARD_BITS on, in order
        got = [r["event_id"] for r in rows(out, "pos_transaction", shard)]
        first = shard << SEQ_SHARD_BITS
        seqs = np.arange(first, first + len(got), dtype=np.int64)
        want = [b.decode() for b in event_ids(21, "retail.pos_transaction", seqs).tolist()]
        assert got and sorted(got) == sorted(want)
    stores = {
        shard: {r["store_id"] for r in rows(out, "pos_transaction", shard)} for shard in range(3)
    }
    assert all(stores.values())
    assert not (stores[0] & stores[1]) and not (stores[1] & stores[2])  # a store is one shard's


def test_the_same_seed_and_shards_give_the_same_data_whatever_the_workers(
    outputs: dict[str, Path],
) -> None:
    for name in STREAMS:
        for shard in range(3):
            one = sorted(orjson.dumps(r) for r in rows(outputs["w1"], name, shard))
            two = sorted(orjson.dumps(r) for r in rows(outputs["w2"], name, shard))
            assert one == two, (name, shard)


def test_the_shards_rates_add_up_to_the_profile(outputs: dict[str, Path]) -> None:
    """The paced stream's total over the window: as one process makes it, to within a
    rounding per shard (each shard's events are the floor of its share)."""

    def released(out: Path) -> int:
        account = orjson.loads((out.parent / f"{out.name}.json").read_bytes())
        n: int = account["streams"]["retail.pos_transaction"]["released"]
        return n

    whole, parts = released(outputs["one"]), released(outputs["w2"])
    assert whole > 4_000
    assert whole - 3 <= parts <= whole


def test_on_the_wall_clock_every_shard_starts_when_the_run_does(tmp_path: Path) -> None:
    """A worker process that comes up later catches up from the run's start: the catalogue
    shard 0 lists is never later than another shard's opening stock of it."""
    cfg = CFG.replace("clock: simulated, start: 2026-03-02T00:00:00Z, duration: 5d", "duration: 3s")
    cfg = cfg.replace("base: 0.012", "base: 300").replace(" expected_daily_transactions: 900,", "")
    out = tmp_path / "wall"
    (tmp_path / "wall.yaml").write_text(cfg.format(out=out, shards=3))
    r = subprocess.run(
        [*CLI, "run", str(tmp_path / "wall.yaml"), "--workers", "2"],
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    starts = {
        min(x["event_time"] for x in rows(out, "inventory_movement", shard)) for shard in range(3)
    }
    assert len(starts) == 1, starts
    streams = {name: by_time(rows(out, name)) for name in STREAMS}
    assert check_references(streams) == (6, 300)
