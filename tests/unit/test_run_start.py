"""Where a stream run's packs begin: at their streams' start, not at their first poll, so
shards that come up at different moments begin their business at the same instant."""

from __future__ import annotations

from pathlib import Path

import pytest

from datafactory.config import parse_config
from datafactory.pack import Shard
from datafactory.runtime.shards import Shards
from datafactory.runtime.start import start

CFG = """
run: {{name: begin, seed: 5, shards: 3}}
packs:
  {pack}:
    params: {params}
sinks:
  out: {{type: file, path: /tmp/unused}}
"""

PACKS = {
    # pack: (params, the stream whose first events are the population's start)
    "retail": ("{stores: 3, skus: 40, customers: 60}", "inventory_movement"),
    "iot": ("{devices: 30, sites: 3}", "device_status"),
}

T0_US = 1_780_000_000_000_000


@pytest.mark.parametrize("pack", sorted(PACKS))
def test_a_shard_polled_late_begins_when_its_streams_start(pack: str) -> None:
    params, stream = PACKS[pack]
    cfg = parse_config(CFG.format(pack=pack, params=params))
    firsts = []
    for late_ms in (0, 80, 2_000):
        begun = start(cfg, T0_US / 1e6, None, None, None, Shard(1, 3))
        lane = next(x for x in begun.driver.lanes.values() if x.plan.stream == stream)
        for name in begun.driver.lanes:
            begun.driver.start(name, T0_US)
        block = begun.driver.poll(lane.name, T0_US + late_ms * 1000)
        assert block is not None and len(block), (pack, late_ms)
        firsts.append(int(block.event_time.min()))
    assert firsts == [T0_US] * 3


def test_a_sharded_run_keeps_its_first_start_across_a_restart(tmp_path: Path) -> None:
    cfg = parse_config(CFG.format(pack="retail", params=PACKS["retail"][0]))
    fresh = Shards(cfg, journal=tmp_path / "journal")._origin()
    marks = {0: {"retail.pos_transaction": 5}, 1: None, 2: None}
    again = Shards(cfg, marks, journal=tmp_path / "journal")
    assert again._origin() == fresh
    anew = Shards(cfg, journal=tmp_path / "journal")._origin()  # a fresh run starts anew
    assert anew >= fresh and (tmp_path / "journal" / "origin").read_text() == repr(anew)
