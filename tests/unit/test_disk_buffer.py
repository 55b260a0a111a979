"""A ``type: disk`` sink buffer: a lagging sink spills to disk instead of holding its stream
back or shedding, writes everything later in release order, byte for byte, and what is on
disk outlives the process (a suspended run's next start drains it first)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datafactory.config import ConfigError, parse_config
from datafactory.encoders import build_encoder
from datafactory.encoders.base import EncodedBatch
from datafactory.engine.blocks import RecordBlock
from datafactory.runtime.engine import Engine
from datafactory.runtime.spill import DiskBuffer
from datafactory.schema import load_schema
from datafactory.sinks.base import Sink, SinkContext

STREAM = "retail.pos_transaction"

CONFIG = """
run: {{name: spill, seed: 3, duration: {duration}}}
packs:
  retail:
    params: {{stores: 5, skus: 200, customers: 500}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 4000}}}}
sinks:
  fast: {{type: stdout}}
  slow: {{type: stdout, buffer: {{type: disk, max_events: 400, max_bytes: {max_bytes},
                                  when_full: {policy}}}}}
engine: {{block_size: 2000, batch_max: 200, pacing_interval: 10ms}}
telemetry: {{enabled: false}}
"""


class Recorder(Sink):
    """Records each record's bytes by seq; ``delay`` seconds per batch."""

    Config: Any = None

    def __init__(self, name: str, config: Any, ctx: SinkContext, delay: float) -> None:
        super().__init__(name, config, ctx)
        self.delay = delay
        self.seqs: list[int] = []
        self.records: dict[int, bytes] = {}

    async def connect(self) -> None:
        pass

    async def write_batch(self, batch: EncodedBatch) -> None:
        await asyncio.sleep(self.delay)
        for s, r in zip(batch.seqs().tolist(), batch.records(), strict=True):
            self.seqs.append(s)
            self.records[s] = bytes(r)

    async def close(self) -> None:
        pass


def build(
    tmp_path: Path,
    *,
    slow_delay: float = 0.02,
    duration: str = "3s",
    policy: str = "block",
    max_bytes: str = "64MiB",
    resume: dict[str, int] | None = None,
) -> tuple[Engine, dict[str, Recorder]]:
    sinks: dict[str, Recorder] = {}

    def factory(name: str, cfg: Any, ctx: SinkContext) -> Sink:
        # slices are ~40 events (10 ms at 4,000/s): the slow sink takes ~2,000 events/s
        sinks[name] = Recorder(name, cfg, ctx, slow_delay if name == "slow" else 0.0)
        return sinks[name]

    text = CONFIG.format(duration=duration, policy=policy, max_bytes=max_bytes)
    engine = Engine(
        parse_config(text), sink_factory=factory, buffers=tmp_path / "buffers", resume=resume
    )
    return engine, sinks


async def test_a_lagging_sink_spills_to_disk_and_writes_everything_later_in_order(
    tmp_path: Path,
) -> None:
    engine, sinks = build(tmp_path)
    task = asyncio.create_task(engine.run())
    await asyncio.sleep(2.0)
    mid = engine.snapshot()["sinks"]["slow"]
    engine.sinks["slow"].sample()
    gauge = engine.metrics.registry.get_sample_value
    on_disk_gauge = gauge("datafactory_sink_disk_buffer_events", {"sink": "slow"})
    age_gauge = gauge("datafactory_sink_disk_buffer_oldest_seconds", {"sink": "slow"})
    summary = await task
    released = summary["streams"][STREAM]["released"]
    assert released >= 0.9 * 4000 * 3  # the stream kept its pace: nothing held it back
    fast, slow = sinks["fast"], sinks["slow"]
    assert fast.seqs == list(range(released))
    assert slow.seqs == list(range(released))  # everything, once, in release order
    assert slow.records == fast.records  # byte for byte what the fast sink got
    assert mid["holding_back"] == [] and mid["disk"]["events"] > 0
    assert mid["disk"]["bytes"] > 0 and mid["disk"]["oldest_seconds"] > 0
    assert on_disk_gauge is not None and on_disk_gauge > 0
    assert age_gauge is not None and age_gauge > 0
    spilled = gauge("datafactory_sink_spilled_events_total", {"stream": STREAM, "sink": "slow"})
    assert spilled is not None and spilled > released / 4
    s = summary["sinks"]["slow"]
    assert s["sent"][STREAM] == released and s["shed"][STREAM] == 0
    assert s["disk"]["events"] == 0 and s["lag_events"] == 0
    assert not (tmp_path / "buffers").exists() or not any((tmp_path / "buffers").rglob("*"))
    # the checkpoint counts agree with what the sink wrote, from memory and from disk
    counters = engine.counters(at_mark=True)[(STREAM, "slow")]
    assert counters["acked"] == counters["generated"] == released


async def test_a_full_disk_part_falls_back_to_the_policy(tmp_path: Path) -> None:
    engine, sinks = build(tmp_path, policy="drop_newest", max_bytes="64KiB")
    summary = await engine.run()
    released = summary["streams"][STREAM]["released"]
    assert released >= 0.9 * 4000 * 3
    s = summary["sinks"]["slow"]
    shed = s["shed"][STREAM]
    assert shed > 0 and s["sent"][STREAM] + shed == released
    assert sorted(sinks["slow"].seqs) == sinks["slow"].seqs  # in order, once each
    assert summary["queues"]["sink:slow"]["high_water"] <= 400 + 200


async def test_a_suspended_run_keeps_its_disk_buffer_and_the_next_start_drains_it_first(
    tmp_path: Path,
) -> None:
    engine, first = build(tmp_path, duration="1h")
    task = asyncio.create_task(engine.run())
    await asyncio.sleep(2.0)
    engine.stop(suspend=True)  # what a daemon shutdown does
    summary = await asyncio.wait_for(task, 10)
    released = summary["streams"][STREAM]["released"]
    marks = {name: mark for name, (mark, _) in engine.marks().items()}
    assert marks[STREAM] == released  # everything is done for the mark: written or on disk
    slow = summary["sinks"]["slow"]
    on_disk = slow["disk"]["events"]
    assert on_disk > 1000 and slow["sent"][STREAM] + on_disk == released
    files = sorted((tmp_path / "buffers").rglob("*.npz"))
    assert files and all(f.parent.name == "slow" for f in files)

    # the next start: same folder, resumed from the marks, a sink that keeps up now
    engine2, second = build(tmp_path, slow_delay=0.0, duration="1s", resume=marks)
    summary2 = await engine2.run()
    total = summary2["streams"][STREAM]["released"]
    assert total > released
    # what was on disk first, then the new events: every seq once, in order
    assert first["slow"].seqs + second["slow"].seqs == list(range(total))
    assert first["fast"].seqs + second["fast"].seqs == list(range(total))
    both = {**first["slow"].records, **second["slow"].records}
    assert both == {**first["fast"].records, **second["fast"].records}
    assert not list((tmp_path / "buffers").rglob("*.npz"))


def _batch(seqs: range, fmt: str = "json") -> EncodedBatch:
    schema = load_schema("iot.heartbeat")
    n = len(seqs)
    columns: dict[str, Any] = {}
    for f in schema.fields:
        columns[f["name"]] = np.zeros(n, dtype=np.int64)
    block = RecordBlock(
        stream="iot.heartbeat",
        seq=np.arange(seqs.start, seqs.stop, dtype=np.int64),
        event_time=np.arange(n, dtype=np.int64) * 1000 + 1_700_000_000_000_000,
        key=np.arange(n, dtype=np.int64) % 7,
        columns=columns,
    )
    return build_encoder(fmt, schema, 1).encode(block)


def test_spilled_slices_come_back_byte_for_byte_after_a_restart(tmp_path: Path) -> None:
    disk = DiskBuffer(tmp_path, 1 << 20)
    a, b = _batch(range(0, 50)), _batch(range(50, 80))
    for batch in (a, b):
        no = disk.reserve(batch.nbytes)
        disk.written(disk.write(no, batch, 1000.0), batch.nbytes)
    assert disk.events == 80 and disk.bytes == a.nbytes + b.nbytes
    (tmp_path / "000000000009.tmp").write_bytes(b"half written")

    again = DiskBuffer(tmp_path, 1 << 20)
    found = again.restore()
    assert [s.events for s in found] == [50, 30]
    assert not (tmp_path / "000000000009.tmp").exists()
    seg = again.next_unread()
    back = again.read(seg, a.schema)
    assert back.seqs().tolist() == list(range(50))
    assert [bytes(r) for r in back.records()] == [bytes(r) for r in a.records()]
    assert back.keys().tolist() == a.keys().tolist()
    again.remove(seg)
    assert again.events == 30 and not seg.path.exists()
    # new files continue the numbering after what was found
    assert again.reserve(10) == found[-1].no + 1


def test_a_file_that_would_need_pickle_is_set_aside_not_run(tmp_path: Path) -> None:
    disk = DiskBuffer(tmp_path, 1 << 20)
    batch = _batch(range(0, 5))
    no = disk.reserve(batch.nbytes)
    seg = disk.write(no, batch, 1000.0)
    # a crafted file: an object array (loading it would unpickle)
    evil = tmp_path / "000000000001.npz"
    np.savez(evil, header=np.array([{"x": 1}], dtype=object))
    again = DiskBuffer(tmp_path, 1 << 20)
    found = again.restore()
    assert [s.no for s in found] == [seg.no]
    assert (tmp_path / "000000000001.bad").exists() and not evil.exists()


@pytest.mark.parametrize(
    ("buffer", "error"),
    [
        ("{type: memory, max_bytes: 2GiB}", "max_bytes bounds a disk buffer"),
        ("{type: disk, max_bytes: 10}", "max_bytes"),
        ("{type: tape}", "buffer.type"),
    ],
)
def test_buffer_settings_are_checked(buffer: str, error: str) -> None:
    text = CONFIG.format(duration="1s", policy="block", max_bytes="1MiB").replace(
        "fast: {type: stdout}", f"fast: {{type: stdout, buffer: {buffer}}}"
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert error in str(e.value)


def test_a_disk_buffer_refuses_mqtt_topics_made_from_record_fields() -> None:
    text = CONFIG.format(duration="1s", policy="block", max_bytes="1MiB").replace(
        "fast: {type: stdout}",
        'fast: {type: mqtt, topic: "site/{store_id}/{stream}", buffer: {type: disk}}',
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert "store_id" in str(e.value) and "memory buffer" in str(e.value)
    parse_config(text.replace("site/{store_id}/{stream}", "{pack}/{stream}"))
