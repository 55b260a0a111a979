"""Driven streams: events a pack's simulation makes from what its paced streams released (and
from the passing of time), released in event-time order as the paced streams advance."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson
import pytest

from datafactory import pack as pack_mod
from datafactory.config import ConfigError, parse_config
from datafactory.engine.blocks import RecordBlock
from datafactory.engine.rate import ConstantProfile
from datafactory.pack import Pack, StreamGenerator, StreamSpec
from datafactory.runtime import engine as pipeline
from datafactory.runtime import start as starting
from datafactory.schema import EventSchema, load_schema, make_schema
from datafactory_retail import RetailPack, RetailParams

HOUR = 3_600_000_000
SHIPMENT = make_schema(
    "shop.shipment",
    {
        "type": "record",
        "name": "Shipment",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "order_seq", "type": "long"},
        ],
    },
)
TICK = make_schema(
    "shop.tick",
    {
        "type": "record",
        "name": "Tick",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "hour", "type": "long"},
        ],
    },
)


class Orders(StreamGenerator):
    def __init__(self, pack: ShopPack) -> None:
        self.pack = pack
        self.inner = pack.retail.stream("pos_transaction")
        self.schema = self.inner.schema

    def generate(self, seq: int, event_time: Any) -> RecordBlock:
        block = self.inner.generate(seq, event_time)
        block.stream = "shop.orders"
        return block

    def released(self, block: RecordBlock) -> None:
        # each order ships two hours after it was placed
        self.pack.pending_ships.append((block.event_time + 2 * HOUR, block.seq.copy()))


class Shipments(StreamGenerator):
    schema = SHIPMENT

    def __init__(self, pack: ShopPack) -> None:
        self.pack = pack

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        if not self.pack.pending_ships:
            return None
        times = np.concatenate([t for t, _ in self.pack.pending_ships])
        orders = np.concatenate([s for _, s in self.pack.pending_ships])
        order = np.argsort(times, kind="stable")
        times, orders = times[order], orders[order]
        due = int(np.searchsorted(times, until_us, side="right")) if until_us is not None else 0
        n = min(due, limit)
        self.pack.pending_ships = [(times[n:], orders[n:])]
        if n == 0:
            return None
        seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
        return RecordBlock("shop.shipment", seq, times[:n], orders[:n], {"order_seq": orders[:n]})


class Ticks(StreamGenerator):
    """Time-driven: one event per hour boundary the paced streams have passed."""

    schema = TICK

    def __init__(self) -> None:
        self.next_hour: int | None = None

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        if until_us is None:
            return None
        if self.next_hour is None:
            self.next_hour = (until_us // HOUR + 1) * HOUR
        hours = np.arange(self.next_hour, until_us + 1, HOUR, dtype=np.int64)[:limit]
        if not len(hours):
            return None
        self.next_hour = int(hours[-1]) + HOUR
        seq = np.arange(seq_start, seq_start + len(hours), dtype=np.int64)
        return RecordBlock("shop.tick", seq, hours, seq, {"hour": hours // HOUR})


class ShopPack(Pack):
    name = "shop"
    description = "orders and what follows from them (a test pack)"
    Params = RetailParams
    streams: ClassVar[dict[str, StreamSpec]] = {
        "orders": StreamSpec("orders", "orders", ConstantProfile(base=10)),
        "shipment": StreamSpec("shipment", "two hours after each order", driven=True),
        "tick": StreamSpec("tick", "every hour", driven=True),
    }

    def __init__(self, params: Any, seeds: Any) -> None:
        super().__init__(params, seeds)
        self.retail = RetailPack(params, seeds)
        self.pending_ships: list[tuple[Any, Any]] = []
        self.ticks = Ticks()

    def stream(self, name: str) -> StreamGenerator:
        if name == "orders":
            return Orders(self)
        return Shipments(self) if name == "shipment" else self.ticks

    @classmethod
    def schema_for(cls, stream: str) -> EventSchema:
        return {"shipment": SHIPMENT, "tick": TICK}.get(stream) or load_schema(
            "retail.pos_transaction"
        )


@pytest.fixture(autouse=True)
def shop(monkeypatch: pytest.MonkeyPatch) -> None:
    packs = {**pack_mod.registered_packs(), "shop": ShopPack}
    monkeypatch.setattr(pack_mod, "registered_packs", lambda: packs)
    monkeypatch.setattr(starting, "registered_packs", lambda: packs)


CFG = """
run: {{name: shop, seed: 3, clock: simulated, start: 2026-03-01T00:30:00Z}}
packs:
  shop:
    streams:
      orders: {{max_events: {n}}}
      shipment: {{{ship}}}
      tick: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
telemetry: {{enabled: false}}
"""


def _rows(root: Path, stream: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(x)
        for f in sorted((root / "shop" / stream).glob("*.jsonl"))
        for x in f.read_bytes().splitlines()
    ]


def _us(ts: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1_000_000)


async def test_driven_streams_follow_what_was_released_in_event_time_order(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    summary = await pipeline.Engine(parse_config(CFG.format(n=100_000, ship="", out=out))).run()
    orders = _rows(out, "orders")
    ships = _rows(out, "shipment")
    ticks = _rows(out, "tick")
    assert len(orders) == 100_000 == summary["streams"]["shop.orders"]["released"]
    times = {i: _us(o["event_time"]) for i, o in enumerate(orders)}
    last = max(times.values())
    # one shipment per order whose time has come by the end, two hours after it, in order
    expected = sorted(q for q, t in times.items() if t + 2 * HOUR <= last)
    assert sorted(s["order_seq"] for s in ships) == expected and len(expected) > 20_000
    for s in ships[:: max(1, len(ships) // 500)]:
        assert _us(s["event_time"]) == times[s["order_seq"]] + 2 * HOUR
    ship_times = [_us(s["event_time"]) for s in ships]
    assert ship_times == sorted(ship_times)
    # an hour tick for every hour boundary passed: 01:00 .. the last order's hour
    first = _us(orders[0]["event_time"])
    assert [t["hour"] for t in ticks] == list(range(first // HOUR + 1, last // HOUR + 1))
    assert summary["streams"]["shop.shipment"]["released"] == len(ships)


async def test_driven_streams_take_max_events_and_refuse_a_rate(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = CFG.format(n=100_000, ship="max_events: 100", out=out)
    await pipeline.Engine(parse_config(cfg)).run()
    assert len(_rows(out, "shipment")) == 100
    with pytest.raises(ConfigError, match=r"shipment.*driven by the pack's simulation"):
        parse_config(CFG.format(n=10, ship="rate: {profile: constant, base: 5}", out=out))


def test_pending_events_come_out_in_time_order_ties_as_added() -> None:
    """Batches spanning many hour buckets, added out of order, taken in small pieces: the
    pieces join up to a stable sort of everything by time (ties in the order added), and
    nothing later than ``until`` comes out."""
    from datafactory.engine.timeline import PendingEvents

    rng = np.random.default_rng(3)
    pending = PendingEvents()
    all_t, all_id = [], []
    next_id = 0
    for _ in range(40):
        k = int(rng.integers(0, 300))
        t = rng.integers(0, 30 * 24, k) * (HOUR // 4)  # ties on purpose (quarter hours)
        ids = np.arange(next_id, next_id + k)
        next_id += k
        pending.add(t=t, id=ids)
        all_t.append(t)
        all_id.append(ids)
    t_all, id_all = np.concatenate(all_t), np.concatenate(all_id)
    order = np.argsort(t_all, kind="stable")
    got_t, got_id = [], []
    until = 0
    while pending:
        until += 5 * HOUR
        while (c := pending.take(until, 97)) is not None:
            assert (c["t"] <= until).all() and len(c["t"]) <= 97
            got_t.append(c["t"])
            got_id.append(c["id"])
    assert np.array_equal(np.concatenate(got_t), t_all[order])
    assert np.array_equal(np.concatenate(got_id), id_all[order])


@pytest.mark.parametrize(
    ("pack", "params", "duration"),
    [("healthcare", {"patients": 1500}, "6d"), ("iot", {"devices": 60, "sites": 3}, "12h")],
)
def test_clock_driven_data_does_not_depend_on_the_simulated_step(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pack: str,
    params: dict[str, Any],
    duration: str,
) -> None:
    """The step a simulated clock jumps when nothing is due only sets how much one poll
    releases: the files are the same byte for byte with 15 min and 6 h steps."""
    import asyncio
    import hashlib
    import json

    from datafactory.config import parse_config
    from datafactory.runtime import engine as pipeline
    from datafactory.runtime import pacing

    digests = []
    for step in (900.0, 21_600.0):
        monkeypatch.setattr(pacing, "CLOCK_DRIVEN_STEP", step)
        out = tmp_path / str(int(step))
        cfg = parse_config(json.dumps({
            "run": {"seed": 2, "clock": "simulated", "start": "2026-03-02T00:00:00Z",
                    "duration": duration},
            "packs": {pack: {"params": params}},
            "sinks": {"f": {"type": "file", "path": str(out), "format": "json"}},
            "telemetry": {"enabled": False},
        }))  # fmt: skip
        asyncio.run(pipeline.Engine(cfg).run())
        files = sorted(out.rglob("*.jsonl"))
        assert files
        lines: dict[str, list[bytes]] = {}
        for p in files:  # file cuts may differ; the lines of each stream, in order, may not
            lines.setdefault(p.parent.name, []).extend(p.read_bytes().splitlines())
        digests.append({k: hashlib.sha256(b"\n".join(v)).hexdigest() for k, v in lines.items()})
    assert digests[0] == digests[1]
