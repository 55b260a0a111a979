"""Where a stream run's packs and lanes start: fresh from the config, after a batch's history
(``run.from_state``), or, for a restarted run, where the run was (its journal replayed; or,
without a journal, from each stream's checkpoint mark as a new simulation, said in the log).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from datafactory.config import Config
from datafactory.engine.blocks import RecordBlock
from datafactory.engine.seeding import SeedTree
from datafactory.pack import Pack, Shard, registered_packs
from datafactory.runtime.drive import Driver
from datafactory.runtime.journal import Journal

log = structlog.get_logger("datafactory.engine")


@dataclass
class Start:
    packs: dict[str, Pack]
    driver: Driver
    # a restarted run: per stream, the events it released after its mark (to send again);
    # None: the streams start anew
    again: dict[str, list[RecordBlock]] | None


def start(
    config: Config,
    t0: float,
    state: dict[str, Any] | None,
    journal: Journal | None,
    resume: dict[str, int] | None,
    shard: Shard,
) -> Start:
    """The packs and the driver (every config stream a lane), the journal open for what the
    run does next. ``t0``: a placeholder start for the lanes (a stream's start sets it);
    ``shard``: the part of the population (and of the seq space) this run makes."""
    eng = config.model.engine
    seeds, pack_types = SeedTree(config.run.seed), registered_packs()
    # (a pack that cannot be split is built as any pack is: from its params and seeds)
    part = (shard,) if shard.count > 1 else ()
    packs: dict[str, Pack] = {
        p: state["packs"][p] if state is not None else pack_types[p](params, seeds, *part)
        for p, params in config.pack_params.items()
    }
    replay = journal is not None and bool(resume) and journal.exists()
    # slices are released whole: a generated block is at most one sink write
    driver = Driver(packs, min(eng.block_size, eng.batch_max), journal.record if journal else None)
    carried: dict[str, dict[str, Any]] = (state or {}).get("streams", {})
    for plan in config.streams:
        lane = carried.get(plan.event_type)  # a run after a batch: from its history
        if resume and plan.event_type in resume and not replay:
            lane = {"seq": resume[plan.event_type]}
        driver.add(plan, t0=t0, seq=shard.seq_base, carried=lane)
    if resume and not replay:
        log.warning("resume_without_journal", marks=resume)
    # the packs go through what they went through, and make again what was released after
    # each mark
    again = journal.replay(driver, resume or {}) if journal and replay else None
    if journal is not None:
        journal.open()
    return Start(packs, driver, again)
