"""Chaos steps, the chain and the manifest, in process."""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastavro import schemaless_reader

from datafactory.chaos import build_chain, parse_steps
from datafactory.chaos.base import FaultLog, RenderContext, Schedule
from datafactory.chaos.chain import render_patches
from datafactory.config import ConfigError, parse_config
from datafactory.encoders import build_encoder
from datafactory.engine.blocks import RecordBlock, concat
from datafactory.engine.seeding import SeedTree
from datafactory.pack import registered_packs
from datafactory.runtime.drive import uniform_times
from datafactory.runtime.engine import Engine
from datafactory.schema import load_schema

STREAM = "retail.pos_transaction"
ALL = [
    {"step": "drop", "rate": 0.05},
    {"step": "duplicate", "rate": 0.05, "copies": 2},
    {"step": "delay", "rate": 0.05, "min": "1s", "max": "2s"},
    {"step": "schema_drift", "rate": 0.05},
    {"step": "corrupt_value", "rate": 0.05},
    {"step": "corrupt_bytes", "rate": 0.05},
    {"step": "poison_pill", "rate": 0.05},
    {"step": "timestamp_skew", "rate": 0.05},
    {"step": "oversize", "rate": 0.05, "bytes": 4096},
    {"step": "hot_key", "rate": 0.05},
]


def events(n: int, seed: int = 3) -> RecordBlock:
    pack = registered_packs()["retail"](registered_packs()["retail"].Params(), SeedTree(seed))
    block = pack.stream("pos_transaction").generate(0, uniform_times(n, 1_767_225_600_000_000, 0))
    # 100 events/s ending now (the reference validator wants plausible event times)
    start = int(time.time() * 1_000_000) - n * 10_000
    block.event_time = start + np.arange(n, dtype=np.int64) * 10_000
    return block


def steps(raw: list[dict[str, Any]]) -> list[Any]:
    parsed, problems = parse_steps(raw)
    assert not problems
    return [c for _, c in parsed]


def run_chain(raw: list[dict[str, Any]], block: RecordBlock, slice_size: int) -> tuple[Any, Any]:
    faults: list[Any] = []

    def keep(log: FaultLog) -> None:
        faults.extend(log.items)

    chain = build_chain(steps(raw), STREAM, load_schema(STREAM), 9, keep)
    assert chain is not None
    chain.start(int(block.event_time[0]))
    out = [chain(piece) for piece in block.slices(slice_size)]
    rest = chain.flush()
    out += [rest] if rest is not None else []
    return concat(out), faults


def hit_sets(faults: list[Any]) -> dict[tuple[str, str], set[int]]:
    out: dict[tuple[str, str], set[int]] = {}
    for f in faults:
        out.setdefault((f.name, f.kind), set()).update(f.seq.tolist())
    return out


def test_observed_rates_match_configured_rates() -> None:
    n = 40_000
    _, faults = run_chain(ALL, events(n), 1000)
    per_step = Counter()
    for f in faults:
        per_step[f.step] += len(f.seq)
    for step in ALL:
        name = step["step"]
        # drop runs first, so later steps see 95% of events (byte-level steps skip rows
        # an earlier byte-level step already rewrote)
        seen = n * 0.95 if name != "drop" else n
        expected = seen * step["rate"]
        sigma = math.sqrt(expected * (1 - step["rate"]))
        assert abs(per_step[name] - expected) < 5 * sigma + 0.06 * expected, (name, per_step)


def test_decisions_depend_on_seq_not_on_slicing() -> None:
    block = events(12_000)
    out_a, faults_a = run_chain(ALL, block, 97)
    out_b, faults_b = run_chain(ALL, block, 5000)
    assert hit_sets(faults_a) == hit_sets(faults_b)
    assert sorted(out_a.seq.tolist()) == sorted(out_b.seq.tolist())


def test_drop_duplicate_and_delay_shape_the_stream() -> None:
    block = events(20_000)
    raw = [
        {"step": "drop", "rate": 0.02},
        {"step": "duplicate", "rate": 0.02, "copies": 2},
        {"step": "delay", "rate": 0.02, "min": "1s", "max": "3s"},
    ]
    out, faults = run_chain(raw, block, 500)
    hits = hit_sets(faults)
    dropped, dups = hits[("drop", "drop")], hits[("duplicate", "duplicate")]
    delayed = hits[("delay", "delay")]
    counts = Counter(out.seq.tolist())
    assert not dropped & set(counts)
    assert set(range(20_000)) - dropped == set(counts)
    assert all(counts[s] == 3 for s in dups) and sum(counts.values()) == 20_000 - len(
        dropped
    ) + 2 * len(dups)
    # a delayed event comes after events generated up to its delay later, event time intact
    pos = {s: i for i, s in enumerate(out.seq.tolist())}
    late = [s for s in delayed if s + 100 < len(block) and pos[s] > pos.get(s + 100, -1) >= 0]
    assert len(late) >= 0.9 * len([s for s in delayed if s + 100 < len(block)])
    assert np.array_equal(out.event_time, block.event_time[out.seq])


def test_block_level_faults_change_only_hit_events() -> None:
    block = events(5000)
    raw = [
        {"step": "timestamp_skew", "rate": 0.05},
        {"step": "hot_key", "rate": 0.05, "keys": 2},
        {"step": "corrupt_value", "rate": 0.05, "kinds": ["out_of_range"]},
    ]
    out, faults = run_chain(raw, block, 700)
    hits = hit_sets(faults)
    skewed = set().union(*(v for (n, _), v in hits.items() if n == "timestamp_skew"))
    moved = set(np.flatnonzero(out.event_time != block.event_time).tolist())
    assert moved == skewed and len(skewed) > 150
    offsets = (out.event_time - block.event_time)[list(skewed)]
    assert np.all(np.abs(offsets) >= 3600 * 1_000_000)
    hot = hits[("hot_key", "hot_key")]
    assert set(np.flatnonzero(out.key != block.key).tolist()) <= hot
    assert len(set(out.key[list(hot)].tolist())) <= 2
    bad = hits[("corrupt_value", "out_of_range")] - skewed
    rec = out.take(np.array(sorted(bad))).to_records(9)
    schema = load_schema(STREAM)
    enc = build_encoder("json", schema, 9)
    from tests.reference_platform import Invalid, _record

    for line in enc.encode(out.take(np.array(sorted(bad)))).records():
        with pytest.raises(Invalid, match="out of range"):
            _record(orjson.loads(bytes(line)), schema.raw, "$")
    assert len(rec) == len(bad)


def _rendered(raw: list[dict[str, Any]], fmt: str, framed: bool) -> tuple[Any, Any, Any]:
    block = events(4000)
    out, _faults = run_chain(raw, block, 1000)
    schema = load_schema(STREAM)
    enc = build_encoder(fmt, schema, 9, single_object=framed)
    clean = enc.encode(out)
    ctx = RenderContext(fmt, schema, framed, 2**20)
    batch, rendered = render_patches(enc, out, ctx, "s")
    return clean, batch, rendered


def test_json_byte_faults_break_exactly_the_hit_records() -> None:
    from tests.reference_platform import validate

    raw = [
        {"step": "schema_drift", "rate": 0.03},
        {
            "step": "corrupt_value",
            "rate": 0.03,
            "kinds": ["null_required", "wrong_type", "bad_enum"],
        },
        {"step": "corrupt_bytes", "rate": 0.03},
        {"step": "poison_pill", "rate": 0.01},
    ]
    clean, batch, rendered = _rendered(raw, "json", False)
    schema = load_schema(STREAM)
    hit = {int(r) for f in rendered for r in np.flatnonzero(np.isin(clean.block.seq, f.seq))}
    assert len(hit) > 300
    for i in range(len(batch)):
        line = bytes(batch.record(i))
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        problem = validate(line[:-1], schema)
        if i in hit:
            assert problem is not None, line[:200]
        else:
            assert problem is None and line == bytes(clean.record(i))
    kinds = Counter(f.kind for f in rendered)
    assert {"rename", "remove", "add", "retype", "version", "null_required", "bad_enum"} <= set(
        kinds
    )


def test_avro_drift_is_framed_with_its_own_schema_and_lies_are_not() -> None:
    raw = [{"step": "schema_drift", "rate": 0.05}, {"step": "corrupt_bytes", "rate": 0.05}]
    _clean, batch, rendered = _rendered(raw, "avro", True)
    schema = load_schema(STREAM)
    drifted = {int(s) for f in rendered if f.step == "schema_drift" for s in f.seq}
    broken = {int(s) for f in rendered if f.step == "corrupt_bytes" for s in f.seq}
    seqs = batch.block.seq.tolist()
    ok = 0
    for i in range(len(batch)):
        rec = bytes(batch.record(i))
        if seqs[i] in drifted:
            assert rec[:2] == b"\xc3\x01" and rec[2:10] != schema.fingerprint
        elif seqs[i] not in broken:
            assert rec[2:10] == schema.fingerprint
            schemaless_reader(io.BytesIO(rec[10:]), schema.parsed, None)
            ok += 1
    assert ok > 3000 and drifted and broken


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_each_drift_reads_back_as_the_record_with_just_that_change(fmt: str) -> None:
    from datafactory.chaos import records
    from datafactory.chaos.steps.schema_drift import SchemaDrift

    schema = load_schema(STREAM)
    block = events(40)
    ctx = RenderContext(fmt, schema, fmt == "avro", None)
    clean = build_encoder(fmt, schema, 9, single_object=fmt == "avro").encode(block)
    (cfg,) = steps([{"step": "schema_drift", "rate": 1.0}])
    step = SchemaDrift(cfg, STREAM, schema, 9)
    field = "store_id"

    def read(data: bytes, change: str) -> dict[str, Any]:
        if fmt == "json":
            assert data.endswith(b"\n") and data.count(b"\n") == 1
            return dict(orjson.loads(data))
        doc = step._schema(change, field, ctx) if change else records.raw_doc(ctx)
        assert data[:10] == records.AVRO_MAGIC + records.avro_fingerprint(doc)
        parsed = records._parsed(doc)
        return dict(schemaless_reader(io.BytesIO(data[10:]), parsed, None))  # type: ignore[arg-type]

    for i in range(0, 40, 7):
        rec = bytes(clean.record(i))
        before = read(rec, "")
        want = {
            "add": {**before, "unexpected_field": "drift"},
            "version": {**before, "schema_version": 2},
            "rename": {(k + "_v2" if k == field else k): v for k, v in before.items()},
            "remove": {k: v for k, v in before.items() if k != field},
        }
        for change, expect in want.items():
            got = read(step.render(rec, (change, field), ctx), change)
            assert got == expect and list(got) == list(expect), change


def test_oversize_goes_past_the_sink_limit() -> None:
    _clean, batch, rendered = _rendered([{"step": "oversize", "rate": 0.01}], "json", False)
    sizes = batch.sizes()
    big = sizes > 2**20
    assert big.sum() == sum(len(f.seq) for f in rendered) > 10
    for i in np.flatnonzero(big).tolist():
        assert orjson.loads(bytes(batch.record(i)))["padding"]


def test_schedules() -> None:
    t = np.array([0.0, 59.0, 60.0, 70.0, 119.0, 125.0, 200.0])
    window = Schedule.model_validate({"from": "1m", "to": "2m"})
    assert window.factor(t).tolist() == [0, 0, 1, 1, 1, 0, 0]
    periodic = Schedule.model_validate({"every": "1m", "for": "10s"})
    assert periodic.factor(t).tolist() == [1, 0, 1, 0, 0, 1, 0]
    ramp = Schedule.model_validate({"from": "1m", "ramp": "1m"})
    assert ramp.factor(np.array([30.0, 60.0, 90.0, 150.0])).tolist() == [0, 0, 0.5, 1]
    with pytest.raises(ValueError, match="every and for"):
        Schedule.model_validate({"every": "1m"})


SIM = """
run: {{name: quiet, seed: 2, clock: simulated}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 200}}, max_events: 20000}}
sinks:
  files: {{type: file, path: "{path}"}}
telemetry: {{enabled: false}}
{extra}
"""


async def _run(tmp: Path, name: str, extra: str) -> tuple[dict[str, Any], Engine]:
    engine = Engine(parse_config(SIM.format(path=tmp / name, extra=extra)))
    return await engine.run(), engine


def _bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*.jsonl")))


async def test_chaos_off_is_byte_identical_and_the_manifest_has_no_fault(tmp_path: Path) -> None:
    await _run(tmp_path, "plain", "")
    zero = "\n".join(f"  - {{step: {s['step']}, rate: 0}}" for s in ALL)
    manifest = f"manifest: {{sink: {{type: file, path: '{tmp_path / 'm'}'}}}}"
    summary, _ = await _run(tmp_path, "zero", f"chaos:\n{zero}\n{manifest}")
    assert _bytes(tmp_path / "plain") == _bytes(tmp_path / "zero") != b""
    rows = [orjson.loads(x) for x in _bytes(tmp_path / "m" / "chaos").splitlines()]
    assert rows and {r["type"] for r in rows} == {"run"} and rows[-1]["final"]
    assert rows[-1]["released"] == 20_000 and summary["chaos"] == {}


async def test_same_seed_same_faults_and_metrics_count_them(tmp_path: Path) -> None:
    chaos = "chaos:\n" + "\n".join(
        f"  - {{step: {s['step']}, rate: 0.02}}" for s in ALL if s["step"] != "oversize"
    )
    a, engine = await _run(tmp_path, "a", chaos)
    b, _ = await _run(tmp_path, "b", chaos)
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert a["chaos"] == b["chaos"] and sum(a["chaos"].values()) > 2000
    m = engine.metrics.registry
    for key, n in a["chaos"].items():
        stream, step, kind = key.split("/")
        got = m.get_sample_value(
            "datafactory_chaos_injected_total", {"stream": stream, "step": step, "kind": kind}
        )
        assert got == n


async def test_rates_change_live_while_the_run_streams(tmp_path: Path) -> None:
    def config(chaos: str) -> Any:
        extra = f"engine: {{block_size: 1000, batch_max: 1000}}\nchaos: {chaos}"
        return parse_config(SIM.format(path=tmp_path / "live", extra=extra))

    engine = Engine(config("[{step: drop, rate: 0.0}]"))
    stream = engine.streams[0]
    seen: list[int] = []
    report = engine._faults

    def spy(log: FaultLog) -> None:
        seen.extend(s for f in log.items for s in f.seq.tolist())
        report(log)

    engine._faults = spy  # type: ignore[method-assign]
    assert stream.chaos is not None
    stream.chaos.report = spy
    task = asyncio.create_task(engine.run())
    while stream.released < 8000:
        await asyncio.sleep(0)
    switch = stream.released
    await engine.reload(config("[{step: drop, rate: 0.5}]"))  # same step: updated in place
    summary = await task
    dropped = summary["chaos"]["retail.pos_transaction/drop/drop"]
    # the slice in the chain at the moment of the change (<= 1,000 events) may see the new
    # rate; nothing released before it does
    assert switch < 15_000 and switch - 1000 <= min(seen)
    after = 20_000 - min(seen)
    assert abs(dropped - after * 0.5) < 5 * math.sqrt(after * 0.25) + 2
    # a new step kind builds a new chain; taking chaos away leaves the stream untouched
    await engine.reload(config("[{step: hot_key, rate: 0.1}]"))
    assert [s.name for s in stream.chaos.steps] == ["hot_key"]
    await engine.reload(config("[]"))
    assert stream.chaos is None


def test_config_errors_say_what_and_where() -> None:
    text = """
packs: {retail: {}}
sinks: {f: {type: file, format: avro}, k: {type: kafka, bootstrap: "x:1"}}
chaos:
  - {step: drop, rate: 1.5}
  - {step: explode, rate: 0.1}
  - {step: corrupt_bytes, rate: 0.1}
  - {step: corrupt_value, rate: 0.1, fields: [nope]}
  - {step: drop, rate: 0.1}
manifest: {sink: {type: kafka, bootstrap: "x:1"}, format: parquet}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yaml")
    msg = str(e.value)
    assert "c.yaml:5: chaos.0.rate: Input should be less than or equal to 1" in msg
    assert "c.yaml:6: chaos.1.step: unknown chaos step 'explode'" in msg
    assert "c.yaml:7: chaos.2: corrupt_bytes rewrites single records, but sink 'f'" in msg
    assert "chaos.3: retail.pos_transaction: none of the kinds" in msg
    assert "manifest.format: parquet needs a file or aws_s3 sink, not kafka" in msg


async def test_pack_domain_errors_go_to_the_same_manifest(tmp_path: Path) -> None:
    from datafactory.engine.blocks import Label

    manifest = f"manifest: {{sink: {{type: file, path: '{tmp_path / 'm'}'}}}}"
    engine = Engine(parse_config(SIM.format(path=tmp_path / "d", extra=manifest)))
    gen = engine.streams[0].lane.gen
    make = gen.generate

    def labelled(seq: int, event_time: Any) -> RecordBlock:
        block = make(seq, event_time)
        rows = np.flatnonzero(block.seq % 100 == 7)
        block.labels = (Label("invalid_code", rows, [{"code": "X99"}] * len(rows)),)
        return block

    gen.generate = labelled  # type: ignore[method-assign]
    summary = await engine.run()
    assert summary["chaos"] == {"retail.pos_transaction/retail/invalid_code": 200}
    rows = [orjson.loads(x) for x in _bytes(tmp_path / "m" / "chaos").splitlines()]
    faults = [r for r in rows if r["type"] == "fault"]
    assert sorted(r["seq"] for r in faults) == list(range(7, 20_000, 100))
    assert {(r["step"], r["kind"], r["detail"]["code"]) for r in faults} == {
        ("domain", "invalid_code", "X99")
    }


async def test_stopping_the_manifest_never_loses_a_flush_in_progress() -> None:
    """The run ends while a periodic flush is still writing (a slow sink): stop() lets it
    finish, so every fault reaches the sink (cancelling the loop lost that batch)."""
    from datafactory.chaos.base import Fault
    from datafactory.chaos.manifest import Manifest
    from datafactory.config import SinkBase
    from datafactory.sinks.base import Sink

    class Slow(Sink):
        Config = SinkBase

        def __init__(self) -> None:
            self.rows: list[bytes] = []
            self.writing = asyncio.Event()

        async def connect(self) -> None: ...

        async def write_batch(self, batch: Any) -> None:
            self.writing.set()
            await asyncio.sleep(0.3)
            self.rows += bytes(batch.contiguous()).splitlines()

        async def close(self) -> None: ...

    sink = Slow()
    m = Manifest(sink, "jsonl", 0.05, "r", 1, lambda: {"x.y": 10})
    seqs = np.arange(10, dtype=np.int64)
    m.add([Fault("drop", "drop", "drop", "x.y", seqs, seqs, None)])
    loop = asyncio.create_task(m.loop())
    await sink.writing.wait()  # the periodic flush took the faults and is writing them
    m.stop()
    await loop
    await m.flush(final=True)
    faults = [orjson.loads(r) for r in sink.rows if b'"fault"' in r]
    assert sorted(f["seq"] for f in faults) == list(range(10))
