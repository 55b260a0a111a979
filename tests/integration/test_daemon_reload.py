"""Hot reload under load: 200 reloads alternating valid and invalid files, the watcher, and
a change that needs the sinks rebuilt (drain, start anew, roll back if it cannot start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from datafactory.control.daemon import Daemon
from datafactory.control.runs import State

pytestmark = pytest.mark.integration

VALID = """
run: {{name: shop, seed: 4}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}}}
sinks:
  out: {{type: file, path: "{out}"}}
chaos:
  - {{step: hot_key, rate: {chaos}}}
"""
INVALID = [
    "run: {{name: shop\n",  # not YAML
    VALID.replace("base: {rate}", "base: -5"),
    VALID.replace("hot_key, rate: {chaos}", "hot_key, rate: 7"),
    VALID.replace("type: file", "type: ftp"),
    VALID + "surprise: 1\n",
]


async def _daemon(tmp: Path, *, watch: bool) -> Daemon:
    d = Daemon(
        listen="127.0.0.1:0",
        ledger=f"sqlite:///{tmp}/ledger.db",
        token="t",
        configs=str(tmp / "configs"),
        watch=watch,
    )
    await d.start()
    return d


def _lines(root: Path) -> list[bytes]:
    return [x for f in root.rglob("*.jsonl") for x in f.read_bytes().splitlines()]


async def test_200_reloads_alternating_valid_and_invalid_lose_nothing(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "shop.yaml"
    out = tmp_path / "out"
    path.write_text(VALID.format(rate=3000, chaos=0.0, out=out))
    d = await _daemon(tmp_path, watch=False)
    try:
        run = await d.manager.create(path.read_text(), "config:shop")
        while run.state != State.RUNNING:
            await asyncio.sleep(0.05)
        stream = run.engine.streams[0]  # type: ignore[union-attr]
        applied = rejected = 0
        for i in range(200):
            if i % 2:
                path.write_text(INVALID[i % len(INVALID)].format(rate=1, chaos=0.1, out=out))
                result = await d.reload_all("test")
                assert result["rejected"] and not result["reloaded"], result
                rejected += 1
            else:
                rate, chaos = 3010 + 10 * i, round((i % 10) / 100, 2)
                path.write_text(VALID.format(rate=rate, chaos=chaos, out=out))
                result = await d.reload_all("test")
                assert result["reloaded"] and result["reloaded"][0]["needs_restart"] == []
                applied += 1
                assert stream.target_rate() == rate
                assert run.engine.chaos_configs[0].rate == chaos  # type: ignore[union-attr]
            assert run.state == State.RUNNING
            await asyncio.sleep(0.02)
        assert d.reload_failures._value.get() == rejected == 100  # type: ignore[attr-defined]
        assert applied == 100
        await d.manager.stop(run.id)
        await run.task  # type: ignore[misc]
    finally:
        await d.shutdown()
    assert run.state == State.CANCELLED
    lines = _lines(out)
    counters = run.counters()[("retail.pos_transaction", "out")]
    assert counters["acked"] == len(lines) == stream.released > 3000 and counters["failed"] == 0
    seqs = sorted(orjson.loads(x)["event_id"] for x in lines)
    assert len(set(seqs)) == len(seqs)  # no duplicates, and with the count above: none lost


async def test_the_watcher_reloads_on_change_and_rebuilds_changed_sinks(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "shop.yaml"
    path.write_text(VALID.format(rate=1000, chaos=0.0, out=tmp_path / "a"))
    d = await _daemon(tmp_path, watch=True)
    try:
        run = await d.manager.create(path.read_text(), "config:shop")
        while run.state != State.RUNNING:
            await asyncio.sleep(0.05)
        path.write_text(VALID.format(rate=1500, chaos=0.0, out=tmp_path / "a"))
        for _ in range(100):
            if run.engine.streams[0].target_rate() == 1500:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        assert run.engine.streams[0].target_rate() == 1500  # type: ignore[union-attr]
        # a new sink path: the run drains and a new run of the config starts
        path.write_text(VALID.format(rate=1500, chaos=0.0, out=tmp_path / "b"))
        for _ in range(200):
            if run.state == State.CANCELLED and len(d.manager.runs) == 2:
                break
            await asyncio.sleep(0.05)
        new = next(r for r in d.manager.runs.values() if r is not run)
        for _ in range(100):
            if new.state == State.RUNNING:
                break
            await asyncio.sleep(0.05)
        assert run.state == State.CANCELLED and new.state == State.RUNNING
        await asyncio.sleep(0.5)
        assert _lines(tmp_path / "b")
        # a sink that cannot start: roll back to the config that worked
        path.write_text(
            VALID.format(rate=1500, chaos=0.0, out=tmp_path / "b").replace(
                'type: file, path: "' + str(tmp_path / "b") + '"',
                'type: kafka, bootstrap: "127.0.0.1:1"',
            )
        )
        for _ in range(600):
            back = [r for r in d.manager.runs.values() if r not in (run, new)]
            if len(back) == 2 and back[-1].state == State.RUNNING:
                break
            await asyncio.sleep(0.1)
        failed, rolled_back = back
        assert failed.state == State.FAILED and rolled_back.state == State.RUNNING
        assert rolled_back.config.sinks["out"].type == "file"  # type: ignore[attr-defined]
    finally:
        await d.shutdown()
