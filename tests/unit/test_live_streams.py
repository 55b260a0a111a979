"""Streams added and removed while a run streams (a config reload), with a two-stream pack
made for the test from the retail generator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from datafactory import pack as pack_mod
from datafactory.config import parse_config
from datafactory.engine.blocks import RecordBlock
from datafactory.engine.rate import ConstantProfile
from datafactory.pack import Pack, StreamGenerator, StreamSpec
from datafactory.runtime import engine as pipeline
from datafactory.runtime import start as starting
from datafactory.schema import EventSchema, load_schema
from datafactory_retail import RetailPack, RetailParams


class _Twin(StreamGenerator):
    def __init__(self, name: str, inner: StreamGenerator) -> None:
        self.name = name
        self.inner = inner
        self.schema = inner.schema

    def generate(self, seq_start: int, event_time: Any) -> RecordBlock:
        block = self.inner.generate(seq_start, event_time)
        block.stream = f"twin.{self.name}"
        return block


class TwinPack(Pack):
    """Two streams of retail POS events (a and b)."""

    name = "twin"
    description = "two streams for the tests"
    Params = RetailParams
    streams: ClassVar[dict[str, StreamSpec]] = {
        n: StreamSpec(n, "retail POS again", ConstantProfile(base=100)) for n in ("a", "b")
    }

    def __init__(self, params: Any, seeds: Any) -> None:
        super().__init__(params, seeds)
        self.retail = RetailPack(params, seeds)

    def stream(self, name: str) -> StreamGenerator:
        return _Twin(name, self.retail.stream("pos_transaction"))

    @classmethod
    def schema_for(cls, stream: str) -> EventSchema:
        return load_schema("retail.pos_transaction")


@pytest.fixture(autouse=True)
def twin(monkeypatch: pytest.MonkeyPatch) -> None:
    packs = {**pack_mod.registered_packs(), "twin": TwinPack}
    monkeypatch.setattr(pack_mod, "registered_packs", lambda: packs)
    monkeypatch.setattr(starting, "registered_packs", lambda: packs)


CFG = """
run: {{name: live, seed: 1}}
packs:
  twin:
    streams:
      a: {{enabled: {a}, rate: {{profile: constant, base: 1000}}}}
      b: {{enabled: {b}, rate: {{profile: constant, base: 1000}}}}
sinks:
  out: {{type: file, path: "{out}"}}
telemetry: {{enabled: false}}
"""


def _seqs(root: Path, stream: str) -> list[int]:
    ids = [
        orjson.loads(x)["event_id"]
        for f in (root / "twin" / stream).glob("*.jsonl")
        for x in f.read_bytes().splitlines()
    ]
    from datafactory.engine.identity import event_id

    table = {event_id(1, f"twin.{stream}", i): i for i in range(20_000)}
    return sorted(table[i] for i in ids)


async def test_a_reload_adds_and_removes_streams_live(tmp_path: Path) -> None:
    out = tmp_path / "out"
    engine = pipeline.Engine(parse_config(CFG.format(a="true", b="false", out=out)))
    task = asyncio.create_task(engine.run())
    await asyncio.sleep(1.0)
    result = await engine.reload(parse_config(CFG.format(a="true", b="true", out=out)))
    assert result == {"applied": ["added:twin.b"], "needs_restart": []}
    await asyncio.sleep(1.0)
    result = await engine.reload(parse_config(CFG.format(a="false", b="true", out=out)))
    assert result == {"applied": ["removed:twin.a"], "needs_restart": []}
    a_then = engine.streams[0].released
    await asyncio.sleep(1.0)
    assert engine.streams[0].released == a_then  # a stopped releasing
    # a sink change cannot be applied live: nothing changes, a restart is asked for
    other = CFG.format(a="false", b="true", out=tmp_path / "elsewhere")
    result = await engine.reload(parse_config(other))
    assert result == {"applied": [], "needs_restart": ["sinks"]}
    engine.stop()
    summary = await task
    a, b = _seqs(out, "a"), _seqs(out, "b")
    # every released event of both streams was written, seqs contiguous from 0
    assert a == list(range(summary["streams"]["twin.a"]["released"])) and len(a) > 1500
    assert b == list(range(summary["streams"]["twin.b"]["released"])) and len(b) > 1500


async def test_the_daemon_applies_a_new_stream_live_and_records_the_new_config(
    tmp_path: Path,
) -> None:
    from datafactory.control.daemon import Daemon
    from datafactory.control.runs import State

    configs = tmp_path / "configs"
    configs.mkdir()
    path = configs / "twins.yaml"
    path.write_text(CFG.format(a="true", b="false", out=tmp_path / "out"))
    d = Daemon(
        listen="127.0.0.1:0",
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        token="t",
        configs=str(configs),
        watch=False,
    )
    await d.start()
    try:
        run = await d.manager.create(path.read_text(), "config:twins")
        while run.state != State.RUNNING:
            await asyncio.sleep(0.05)
        new = CFG.format(a="true", b="true", out=tmp_path / "out")
        path.write_text(new)
        result = await d.reload_all("test")
        (applied,) = result["reloaded"]
        assert applied["applied"] == ["added:twin.b"] and "replaced_by" not in applied
        assert run.state == State.RUNNING and len(d.manager.runs) == 1
        await asyncio.sleep(0.5)
        assert run.engine is not None and run.engine.streams[1].released > 0
        stored = await d.manager.ledger.get(run.id)
        assert stored is not None and stored.config == new  # a restart resumes with it
    finally:
        await d.shutdown()
