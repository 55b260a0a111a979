"""A run is live from the moment it is accepted: a rate change or a stop sent while its engine
is still being built is not refused (409) and not lost."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from datafactory.batch import simulate
from datafactory.control.ledger import open_ledger
from datafactory.control.runs import RunManager, State
from datafactory.engine.rate import ConstantProfile

SPEC = """
run: {{name: early, seed: 3, duration: 60s}}
packs:
  retail:
    params: {{stores: 2, skus: 50, customers: 100}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 50}}}}
sinks:
  out: {{type: file, path: "{out}"}}
telemetry: {{enabled: false}}
"""


@pytest.fixture
async def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A manager whose runs wait, before their engine is built, until ``gate`` is set."""
    gate = asyncio.Event()
    real = simulate.load_run_state

    async def slow(*args: Any) -> Any:
        await gate.wait()
        return await real(*args)

    monkeypatch.setattr(simulate, "load_run_state", slow)
    monkeypatch.setenv("DATAFACTORY_STATE_DIR", str(tmp_path / "state"))
    m = RunManager(open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}"), data_root=tmp_path)
    await m.start()
    yield m, gate
    await m.close()


async def until(cond: Any, within: float = 10.0) -> None:
    for _ in range(int(within / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not in time")


async def test_a_rate_set_while_provisioning_is_the_rate_it_starts_with(
    held: Any, tmp_path: Path
) -> None:
    m, gate = held
    run = await m.create(SPEC.format(out=tmp_path / "out"), "test")
    await asyncio.sleep(0.1)
    assert run.state == State.PROVISIONING and run.engine is None
    await m.set_rate(run.id, "pos_transaction", ConstantProfile(base=7))
    gate.set()
    await until(lambda: run.engine is not None)
    (plan,) = run.engine.config.streams
    assert plan.rate is not None and plan.rate.base == 7
    assert "base: 7" in (await m.ledger.get(run.id)).config  # what a restart starts from


async def test_a_stop_sent_while_provisioning_stops_the_run(held: Any, tmp_path: Path) -> None:
    m, gate = held
    run = await m.create(SPEC.format(out=tmp_path / "out"), "test")
    await asyncio.sleep(0.1)
    await m.stop(run.id)
    gate.set()
    await until(lambda: run.state == State.CANCELLED)  # not after its 60 s
