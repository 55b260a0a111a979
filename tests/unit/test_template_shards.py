"""A template's history in shards (batch mode's parallel partitions): paced streams split by
share with seqs of their own, members with states or balances owned by one shard each (their
moves and postings one chain), the other members seen alike by every shard."""

from __future__ import annotations

import itertools
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datafactory.config import ConfigError, load_config
from tests.batch_cli import run_batch

SCENARIO = """run: {name: sh, seed: 9}
packs:
  template:
    params:
      entities:
        accounts:
          count: 300
          fields:
            account_id: {gen: pattern, pattern: "A{seq:05d}"}
            opening: {gen: uniform, min: 0, max: 100, decimals: 2}
          balance: {opening: opening, decimals: 2}
          states:
            initial: open
            transitions:
              - {from: open, to: frozen, per_day: 3}
              - {from: frozen, to: open, per_day: 6}
        customers:
          count: 1000
          fields:
            customer_id: {gen: pattern, pattern: "C{seq:05d}"}
      streams:
        payments:
          fields:
            account_id: {gen: ref, entity: accounts, field: account_id, pick: zipf}
            sign: {gen: choice, values: [-1, 1], weights: [6, 4]}
            amount: {gen: uniform, min: 1, max: 60, decimals: 2}
            delta: {gen: expr, expr: "sign * amount", decimals: 2}
            balance_after: {gen: posting, ref: account_id, amount: delta}
            declined: {gen: declined, posting: balance_after}
        visits:
          fields:
            customer_id: {gen: ref, entity: customers, field: customer_id}
        status:
          transitions: {entity: accounts}
          fields:
            account_id: {gen: member, field: account_id}
    streams:
      payments: {rate: {profile: constant, base: 0.1}}
      visits: {rate: {profile: constant, base: 0.1}}
      status: {}
sinks: {out: {type: stdout}}
"""


def history(tmp_path: Path, shards: int) -> dict[str, list[dict]]:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SCENARIO)
    lake = run_batch(cfg, tmp_path / f"lake{shards}", "2026-03-02", "2026-03-03",
                     shards=shards, workers=2)  # fmt: skip
    out: dict[str, list[dict]] = {}
    for stream in ("payments", "visits", "status"):
        rows = []
        for f in sorted(lake.glob(f"stream=template.{stream}/*/*.parquet")):
            shard = int(f.name.split("-")[1])
            rows += [{**r, "_shard": shard} for r in pq.read_table(f).to_pylist()]
        out[stream] = rows
    return out


def test_a_sharded_history_keeps_every_members_chain_in_one_shard(tmp_path: Path) -> None:
    whole, split = history(tmp_path, 1), history(tmp_path, 3)
    two_days = 2 * 86_400 * 0.1
    for stream in ("payments", "visits"):  # each shard 1/3 of the rate: together the whole
        assert len(whole[stream]) == two_days
        assert abs(len(split[stream]) - two_days) <= 3
        assert {r["_shard"] for r in split[stream]} == {0, 1, 2}
        assert len({r["event_id"] for r in split[stream]}) == len(split[stream])
    # members with a balance: each posted to by one shard, its postings one chain in order
    chains: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(split["payments"], key=lambda r: r["event_time"]):
        chains[r["account_id"]].append(r)
    for account, rows in chains.items():
        assert len({r["_shard"] for r in rows}) == 1, account
        for before, now in itertools.pairwise(rows):
            want = before["balance_after"] + (0 if now["declined"] else now["delta"])
            assert now["balance_after"] == want >= Decimal(0), account
    assert len(chains) > 200
    # members with states: each moved by one shard, each move from where the last one went
    moves: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(split["status"], key=lambda r: r["event_time"]):
        moves[r["account_id"]].append(r)
    assert len(moves) > 250
    for account, rows in moves.items():
        assert len({r["_shard"] for r in rows}) == 1, account
        assert all(a["to_state"] == b["from_state"] for a, b in itertools.pairwise(rows))
    # a shard's payments go to the accounts whose moves it makes
    owner = {a: rows[0]["_shard"] for a, rows in moves.items()}
    assert all(owner[a] == rows[0]["_shard"] for a, rows in chains.items() if a in owner)
    # members without state: every shard draws from all of them
    for shard in range(3):
        seen = {int(r["customer_id"][1:]) for r in split["visits"] if r["_shard"] == shard}
        assert min(seen) < 100 and max(seen) > 900


def test_shards_are_at_most_the_members_with_state(tmp_path: Path) -> None:
    p = tmp_path / "too-many.yaml"
    p.write_text(
        SCENARIO.replace("count: 300", "count: 2").replace("seed: 9}", "seed: 9, shards: 3}")
    )
    with pytest.raises(ConfigError, match="at most 2"):
        load_config(p)
    p.write_text(SCENARIO.replace("seed: 9}", "seed: 9, shards: 3}"))
    assert load_config(p).run.shards == 3
