"""The driver: what an event is does not depend on how time was sliced."""

from __future__ import annotations

from datafactory.config import parse_config
from datafactory.encoders import build_encoder
from datafactory.engine.blocks import concat
from datafactory.engine.seeding import SeedTree
from datafactory.pack import registered_packs
from datafactory.runtime.drive import Driver

CFG = """
run: {name: d, seed: 4}
packs:
  retail:
    params: {stores: 5, skus: 300, customers: 1000}
    streams:
      pos_transaction: {rate: {profile: diurnal, base: 40, amplitude: 0.5, period: 10m}}
      return: {}
sinks: {out: {type: stdout}}
"""
T0 = 1_772_325_000_000_000  # epoch µs


def lines(slices: list[int], block_size: int = 512) -> dict[str, bytes]:
    cfg = parse_config(CFG)
    pack = registered_packs()["retail"](cfg.pack_params["retail"], SeedTree(4))
    driver = Driver({"retail": pack}, block_size)
    for plan in cfg.streams:
        driver.add(plan, t0=T0 / 1e6)
    got: dict[str, list] = {}
    a = T0
    for step in slices:
        for block in driver.step(a, a + step):
            got.setdefault(block.stream, []).append(block)
        a += step
    return {
        name: bytes(
            build_encoder("json", pack.schema_for(name.split(".")[1]), 4)
            .encode(concat(bs))
            .contiguous()
        )
        for name, bs in got.items()
    }


def test_the_same_seq_is_the_same_event_however_time_is_sliced() -> None:
    minute = 60_000_000
    a = lines([minute] * 30)
    b = lines([7_000_000] * 257 + [1_000_000])  # 30 min in odd slices
    c = lines([30 * minute])
    assert a["retail.pos_transaction"] == b["retail.pos_transaction"] == c["retail.pos_transaction"]
    assert a["retail.pos_transaction"].count(b"\n") == 72_000  # 40/s on average over 30 min
    assert a.get("retail.return") == b.get("retail.return") == c.get("retail.return")
