"""The checkpoint mark never passes an event a restart would then lose: not one chaos holds back
(a delay), not one whose drop the manifest has not written down yet. At any instant, every seq
below the mark has reached the sink or is a drop in the manifest on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from datafactory.config import parse_config
from datafactory.encoders.base import EncodedBatch
from datafactory.runtime.accounting import Outcome, SliceBook
from datafactory.runtime.engine import Engine
from datafactory.sinks.base import Sink, SinkContext
from datafactory.verify import load_truth, manifest_uri

STREAM = "retail.pos_transaction"
CFG = """
run: {{name: marks, seed: 4}}
packs:
  retail:
    params: {{stores: 4, skus: 100, customers: 500}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 2000}}}}
sinks:
  out: {{type: stdout}}
chaos:
  - {{step: drop, rate: 0.02}}
  - {{step: delay, rate: 0.02, min: 300ms, max: 900ms}}
manifest: {{sink: {{type: file, path: "{manifest}"}}, flush: 700ms}}
engine: {{block_size: 512, batch_max: 256, pacing_interval: 20ms}}
telemetry: {{enabled: false}}
"""


class Recorder(Sink):
    Config: Any = None

    def __init__(self, name: str, config: Any, ctx: SinkContext) -> None:
        super().__init__(name, config, ctx)
        self.seqs: set[int] = set()

    async def connect(self) -> None:
        pass

    async def write_batch(self, batch: EncodedBatch) -> None:
        if batch.stream == STREAM:
            self.seqs.update(batch.seqs().tolist())

    async def close(self) -> None:
        pass


async def drops(cfg: Any) -> set[int]:
    """The drops the manifest on disk holds now (none before its first write)."""
    if not (Path(manifest_uri(cfg).removeprefix("file://"))).exists():
        return set()
    return (await load_truth(manifest_uri(cfg), "marks", 0.1)).seqs(STREAM, "drop")


async def test_the_mark_passes_no_held_back_event_and_no_unwritten_drop(tmp_path: Path) -> None:
    cfg = parse_config(CFG.format(manifest=tmp_path / "m"))
    sinks: list[Recorder] = []

    def factory(name: str, c: Any, ctx: SinkContext) -> Sink:
        sinks.append(Recorder(name, c, ctx))
        return sinks[-1]

    e = Engine(cfg, sink_factory=factory)
    task = asyncio.create_task(e.run())
    checked = marks_seen = 0
    try:
        for _ in range(12):
            await asyncio.sleep(0.25)
            mark = e.marks()[STREAM][0]
            got = set(sinks[0].seqs)
            dropped = await drops(cfg)
            lost = set(range(mark)) - got - dropped
            assert not lost, (mark, sorted(lost)[:10])
            checked += mark
            marks_seen += mark > 0
    finally:
        e.stop()
        await task
    assert marks_seen >= 6 and checked > 0  # the mark did move: the check was not vacuous
    truth = await load_truth(manifest_uri(cfg), "marks", 0.1)
    assert truth.seqs(STREAM, "delay") and truth.seqs(STREAM, "drop")


def test_a_slice_is_not_passed_while_a_lower_event_is_held_back_or_in_a_later_slice() -> None:
    b = SliceBook(0)
    a = b.open(100, 1, low=0)
    b.hold(50)  # chaos holds seq 50 back
    b.done(a, "s", Outcome(acked=99))
    assert b.mark == 0
    c = b.open(200, 1, low=50)  # seq 50 goes out with the next slice
    b.hold(None)
    assert b.mark == 0  # still in flight
    b.done(c, "s", Outcome(acked=101))
    assert b.mark == 200 and b.at_mark["s"].acked == 200


def test_a_gated_book_waits_for_the_manifest() -> None:
    b = SliceBook(0, gated=True)
    first = b.open(100, 1)
    b.done(first, "s", Outcome(acked=100))
    assert b.mark == 0
    barrier = b.truth_barrier()  # the manifest takes its faults...
    second = b.open(200, 1)
    b.done(second, "s", Outcome(acked=100))
    b.truth_written(barrier)  # ...and wrote them: only the first slice's are among them
    assert b.mark == 100 and b.at_mark["s"].acked == 100
    b.truth_written(b.truth_barrier())
    assert b.mark == 200
