"""The driver: what an event is does not depend on how time was sliced."""

from __future__ import annotations

from datafactory.config import parse_config
from datafactory.encoders import build_encoder
from datafactory.engine.blocks import concat
from datafactory.engine.rate import ConstantProfile
from datafactory.engine.seeding import SeedTree
from datafactory.pack import registered_packs
from datafactory.runtime.drive import Driver
from datafactory.runtime.journal import replay_command

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


def _huge_rate_driver(journal: list[dict] | None = None) -> Driver:
    huge = CFG.replace(
        "{profile: diurnal, base: 40, amplitude: 0.5, period: 10m}",
        "{profile: constant, base: 5000000}",
    )
    cfg = parse_config(huge)
    pack = registered_packs()["retail"](cfg.pack_params["retail"], SeedTree(4))
    driver = Driver({"retail": pack}, 512, journal.append if journal is not None else None)
    for plan in cfg.streams:
        driver.add(plan, t0=T0 / 1e6)
    return driver


def test_a_lower_rate_applies_at_once_to_a_stream_far_behind_a_huge_one() -> None:
    """The token bucket holds at most its burst: a stream that could not keep up with 5M/s
    owes at most a second of its new rate when the rate is lowered, and what it forgoes is
    journaled with the change, so a replay is the same lane."""
    journal: list[dict] = []
    driver = _huge_rate_driver(journal)
    name = "retail.pos_transaction"
    driver.start(name, T0)
    a = T0
    for _ in range(20):  # one block per 50 ms slice: far behind 5M/s
        driver.paced(name, a, a + 50_000, one_block=True)
        a += 50_000
    lane = driver.lanes[name]
    assert lane.due(a) - lane.earned > 1_000_000  # a second of 5M/s owed, and more
    lost = driver.set_profile(name, ConstantProfile(base=100), a, 1.0)
    assert lane.due(a) - lane.earned <= 100 and lost > 1_000_000
    got = driver.paced(name, a, a + 2_000_000)
    assert 100 <= sum(map(len, got)) <= 301  # what was owed (<= 1 s of 100/s), then 2 s

    again = _huge_rate_driver()
    for cmd in journal:
        replayed = replay_command(again, cmd)
    assert [b.seq.tolist() for b in replayed] == [b.seq.tolist() for b in got]
    twin = again.lanes[name]
    assert (twin.seq, twin.earned, twin.base) == (lane.seq, lane.earned, lane.base)
