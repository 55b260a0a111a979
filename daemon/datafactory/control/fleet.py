"""Sharded stream runs spread over every daemon that shares a PostgreSQL ledger.

A sharded run created on any daemon of the fleet opens one lease row per shard
(:mod:`.leases`) and is RUNNING; from then on no daemon owns it. Every daemon runs a
:class:`Fleet`: every ``interval`` it reads the live sharded runs and their lease rows, and
takes shards up to its fair share (the open shards over the daemons holding leases, itself
included): a shard nobody holds, or whose holder let its lease expire (killed, stalled, machine
gone). A shard it takes is an :class:`~datafactory.runtime.engine.Engine` of one shard, whose
journal is in the ledger (:mod:`.journal_ledger`): it replays what the last holder journaled
and goes on from that holder's checkpoint marks as the same simulation (events after the marks
are sent again, byte for byte: counted duplicates).

Each shard's checkpoint renews its lease in the same transaction (fenced: a daemon that lost
the lease moves no mark, and stops the shard at once); so does each write of its journal. A
shard that ends is marked done; the last one done ends the run (COMPLETED, or CANCELLED after
a stop). The run's state and config are the ledger's: a daemon applies a pause, a stop or a
new config (a rate) to its shards when it sees them there, so a command sent to any daemon
reaches every shard. ``POST /v1/runs/{id}/rebalance`` gives back shards above the fair share
(at a checkpoint, drained) for the daemons below it to take.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from datafactory.config import Config, parse_config
from datafactory.control.journal_ledger import LedgerStore, purge
from datafactory.control.leases import (
    OPEN,
    Lease,
    claim,
    heartbeat,
    open_shards,
    release,
    renewal,
    shards,
)
from datafactory.control.ledger import Fenced, RunRecord
from datafactory.lifecycle.registry import state_dir
from datafactory.pack import Shard
from datafactory.runtime.engine import Engine
from datafactory.runtime.shards import per_shard, provisioned, shard_key
from datafactory.states import KEY_ENV
from datafactory.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from datafactory.control.runs import RunManager

log = structlog.get_logger("datafactory.fleet")

LIVE = ("RUNNING", "PAUSED", "DRAINING")


def fleet_wanted(ledger: Any) -> bool:
    """Sharded runs go to the fleet on a PostgreSQL ledger (shared by daemons) when the
    daemons share a state key (``$DATAFACTORY_STATE_KEY``: a shard's snapshots are sealed
    with it, and another daemon must be able to open them), unless ``DATAFACTORY_FLEET=0``."""
    shared = str(getattr(ledger, "url", "")).startswith(("postgresql:", "postgres:"))
    if not shared or os.environ.get("DATAFACTORY_FLEET", "1") == "0":
        return False
    if not os.environ.get(KEY_ENV):
        log.warning(
            "fleet_off",
            why=f"a shared ledger but no ${KEY_ENV}: set the same one on every daemon to "
            "spread sharded runs over them (until then each runs its own, as one process)",
        )
        return False
    return True


def may_be_sharded(config_text: str) -> bool:
    """Cheap, before any parse: a run whose config never says ``shards`` is not the fleet's."""
    return "shards" in config_text


def lease_seconds() -> float:
    return float(os.environ.get("DATAFACTORY_LEASE_SECONDS", "10"))


@dataclass
class Part:
    """A shard this daemon holds."""

    lease: Lease
    engine: Engine
    config_hash: str
    task: asyncio.Task[None] | None = None
    lost: bool = False
    failed: bool = False
    handing_back: bool = False  # a rebalance: drained, then left open for another daemon


@dataclass
class FleetRun:
    """What this daemon runs of one sharded run: its parts, and the sinks it provisioned."""

    record: RunRecord
    config: Config
    parts: dict[int, Part] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    provision: contextlib.AbstractAsyncContextManager[dict[str, str]] | None = None


class Fleet:
    """This daemon's part of the fleet (see the module's docstring)."""

    def __init__(self, manager: RunManager, interval: float = 1.0) -> None:
        self.manager = manager
        self.ledger = manager.ledger
        self.owner = manager.owner
        self.ttl = lease_seconds()
        self.interval = interval
        self.runs: dict[str, FleetRun] = {}
        self.daemons: list[str] = [self.owner]  # alive, by their heartbeats
        self._parsed: dict[tuple[str, str], Config | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="fleet")

    async def close(self) -> None:
        """Shut down: every part drained and checkpointed, its lease given back open (another
        daemon takes it at once, not after the lease runs out)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for fr in self.runs.values():
            for p in fr.parts.values():
                p.engine.stop(suspend=True)
        tasks = [p.task for fr in self.runs.values() for p in fr.parts.values() if p.task]
        if tasks:
            await asyncio.wait(tasks, timeout=25)

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._round()
            except Exception as e:  # a ledger hiccup: the next round tries again
                log.error("fleet_round_failed", error=repr(e))
            await asyncio.sleep(self.interval)

    async def _round(self) -> None:
        self.daemons = await heartbeat(self.ledger, self.owner, self.ttl)
        for rec in await self.ledger.runs():
            if rec.state == "PROVISIONING":
                config = await self._config(rec)
                if config is not None and config.run.shards > 1:
                    await self._adopt(rec, config)
                continue
            if rec.state not in LIVE:  # ended (here or by another daemon): the view follows
                self._parsed.pop((rec.id, rec.config_hash), None)
                fr = self.runs.pop(rec.id, None)
                if fr is not None:
                    for p in fr.parts.values():
                        p.engine.stop()
                    self.manager.fleet_synced(rec, fr.config)
                    await self._unprovision(fr)
                continue
            config = await self._config(rec)
            if config is None or config.run.shards < 2:
                continue
            fr = self.runs.get(rec.id)
            if fr is None:
                fr = self.runs[rec.id] = FleetRun(rec, config)
            fr.record = rec
            self.manager.fleet_synced(rec, config)
            await self._follow(fr, config)
            await self._checkpoint(fr)
            rows = await shards(self.ledger, rec.id)
            if rows and all(r.state != OPEN for r in rows):
                await self._end(fr)
                continue
            if rec.state == "RUNNING" and not self._closing:
                await self._take(fr, rows)
            elif rec.state == "DRAINING":
                await self._abandon(fr, rows)

    async def _adopt(self, rec: RunRecord, config: Config) -> None:
        """A run left half made: its creator moved it to PROVISIONING and died (or restarted)
        before opening its shards and moving it on, which takes it milliseconds. After two
        lease periods any daemon does the rest (both steps are idempotent; one daemon wins
        the move), so the run is not stuck when its creator never comes back."""
        if await self.ledger.now() - rec.updated < 2 * self.ttl:
            return
        await open_shards(self.ledger, rec.id, config.run.shards)
        if await self.ledger.transition_if(rec.id, "PROVISIONING", "RUNNING", "adopted"):
            log.warning("fleet_run_adopted", run=rec.id, creator=rec.owner)

    async def _config(self, rec: RunRecord) -> Config | None:
        """A run's config, parsed once per version (every live run is read every round)."""
        key = (rec.id, rec.config_hash)
        if key in self._parsed:
            return self._parsed[key]
        config: Config | None = None
        if may_be_sharded(rec.config):
            try:
                config = await asyncio.to_thread(parse_config, rec.config, f"run {rec.id}")
            except Exception as e:  # validated when created: a bad one is its creator's
                log.error("fleet_config_invalid", run=rec.id, error=str(e))
        self._parsed = {k: v for k, v in self._parsed.items() if k[0] != rec.id}
        self._parsed[key] = config
        return config

    async def _follow(self, fr: FleetRun, config: Config) -> None:
        """The ledger's state and config, applied to this daemon's parts of the run."""
        rec = fr.record
        for p in fr.parts.values():
            if rec.state == "PAUSED" and not p.engine.paused:
                p.engine.pause()
            elif rec.state == "RUNNING" and p.engine.paused:
                p.engine.resume()
            elif rec.state == "DRAINING" and not p.engine.stopping:
                p.engine.stop()
            if p.config_hash != rec.config_hash:
                result = await p.engine.reload(config)
                p.config_hash = rec.config_hash
                log.info("fleet_reloaded", run=rec.id, shard=p.lease.shard, **result)
        fr.config = config

    async def _take(self, fr: FleetRun, rows: list[Any]) -> None:
        now = await self.ledger.now()
        open_rows = [r for r in rows if r.state == OPEN]
        share = self._share(open_rows, now)
        mine = sum(1 for r in open_rows if r.owner == self.owner and r.expires >= now)
        want = share - mine
        if want <= 0:
            return
        won = await claim(self.ledger, fr.record.id, self.owner, self.ttl, want)
        for lease in won:
            try:
                await self._start(fr, lease)
            except Exception as e:
                log.error("shard_start_failed", run=fr.record.id, shard=lease.shard, error=str(e))
                await release(self.ledger, lease)

    async def _start(self, fr: FleetRun, lease: Lease) -> None:
        rec, config = fr.record, fr.config
        if fr.provision is None:  # the run's sinks (topics, buckets): once per daemon
            fr.provision = provisioned(config)
            fr.endpoints = await fr.provision.__aenter__()
        count = config.run.shards
        marks = per_shard(
            {k: m for k, (m, _) in (await self.ledger.checkpoints(rec.id)).items()}, count
        )[lease.shard]
        store = LedgerStore(self.ledger, rec.id, lease.shard, lease)
        await store.load()
        # building replays the journal: off the event loop
        engine = await asyncio.to_thread(
            Engine,
            config,
            metrics=Metrics(),
            resume=marks or None,
            buffers=state_dir() / "buffers" / rec.id / f"shard-{lease.shard}",
            journal=store,
            shard=Shard(lease.shard, count),
            endpoints=fr.endpoints,
            origin=rec.created,
        )
        part = Part(lease, engine, rec.config_hash)
        fr.parts[lease.shard] = part
        part.task = asyncio.create_task(self._run(fr, part), name=f"{rec.id}#{lease.shard}")
        log.info("shard_taken", run=rec.id, shard=lease.shard, epoch=lease.epoch, marks=marks)

    async def _run(self, fr: FleetRun, part: Part) -> None:
        i = part.lease.shard
        try:
            await part.engine.run()
        except Exception as e:
            if part.lost or isinstance(e, Fenced):
                part.lost = True
                log.warning("shard_lost", run=fr.record.id, shard=i, epoch=part.lease.epoch)
            else:
                part.failed = True  # left open: another daemon (or this one) tries again
                log.error("shard_failed", run=fr.record.id, shard=i, error=str(e))
        try:
            if not part.lost:
                await self._save(fr, part)
                over = not (self._closing or part.handing_back or part.failed)
                await release(self.ledger, part.lease, done=over)
                log.info("shard_released", run=fr.record.id, shard=i, done=over)
        except Fenced:
            log.warning("shard_lost", run=fr.record.id, shard=i, epoch=part.lease.epoch)
        except Exception as e:
            log.error("shard_release_failed", run=fr.record.id, shard=i, error=repr(e))
        finally:
            fr.parts.pop(i, None)

    # -- checkpoints -----------------------------------------------------------------------

    async def _checkpoint(self, fr: FleetRun) -> None:
        for part in list(fr.parts.values()):
            if part.lost or part.task is None or part.task.done() or part.engine.stopping:
                continue  # (a part that ends checkpoints itself, then gives its lease back)
            try:
                await self._save(fr, part)
            except Fenced:  # another daemon holds it now: stop at once, send nothing more
                part.lost = True
                part.engine.stop(suspend=True)
                log.warning("shard_lost", run=fr.record.id, shard=part.lease.shard)

    async def _save(self, fr: FleetRun, part: Part) -> None:
        i, e = part.lease.shard, part.engine
        marks = e.marks()
        counters = e.counters(at_mark=True)
        await self.ledger.checkpoint(
            fr.record.id,
            {shard_key(s, i): m for s, m in marks.items()},
            {(shard_key(s, i), k): v for (s, k), v in counters.items()},
            fence=renewal(part.lease, await self.ledger.now() + self.ttl),
        )
        e.checkpointed({s: m for s, (m, _) in marks.items()})

    # -- the end ---------------------------------------------------------------------------

    async def _end(self, fr: FleetRun) -> None:
        """Every shard is done: the run ends (once, whichever daemon sees it first)."""
        rec = await self.ledger.get(fr.record.id)
        if rec is None:
            return
        stopped = any(h["reason"] == "stop" for h in rec.history if h["to"] == "DRAINING")
        frm = rec.state
        if frm != "DRAINING" and await self.ledger.transition_if(rec.id, frm, "DRAINING", "end"):
            frm = "DRAINING"
        to = "CANCELLED" if stopped else "COMPLETED"
        if frm == "DRAINING" and await self.ledger.transition_if(rec.id, frm, to, "drained"):
            await purge(self.ledger, rec.id)
            log.info("fleet_run_ended", run=rec.id, state=to)
            rec.state = to
            self.manager.fleet_synced(rec, fr.config)
        # (another daemon ended it: the next round sees it ended and the view follows)

    async def _abandon(self, fr: FleetRun, rows: list[Any]) -> None:
        """A stopped run's shards nobody runs (their daemon died): done, nothing more sent."""
        won = await claim(self.ledger, fr.record.id, self.owner, self.ttl)
        for lease in won:
            if lease.shard not in fr.parts:
                await release(self.ledger, lease, done=True)

    async def _unprovision(self, fr: FleetRun) -> None:
        if fr.provision is not None:
            with contextlib.suppress(Exception):
                await fr.provision.__aexit__(None, None, None)

    # -- a rebalance -----------------------------------------------------------------------

    async def rebalance(self, run_id: str) -> dict[str, Any]:
        """Give back shards above the fair share (drained at a checkpoint, left open)."""
        fr = self.runs.get(run_id)
        rows = await shards(self.ledger, run_id)
        now = await self.ledger.now()
        open_rows = [r for r in rows if r.state == OPEN]
        share = self._share(open_rows, now)
        given: list[int] = []
        if fr is not None:
            for i in sorted(fr.parts)[share:]:
                part = fr.parts[i]
                part.handing_back = True
                part.engine.stop(suspend=True)
                given.append(i)
        return {"daemons": self.daemons, "share": share, "given_back": given}

    def _share(self, open_rows: list[Any], now: float) -> int:
        """This daemon's fair share of a run's open shards: over the daemons alive (and any
        holding a live lease)."""
        holders = {r.owner for r in open_rows if r.owner and r.expires >= now}
        alive = holders | set(self.daemons) | {self.owner}
        return math.ceil(len(open_rows) / len(alive)) if open_rows else 0
