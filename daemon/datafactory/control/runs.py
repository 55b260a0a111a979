"""Runs as a state machine, owned by the daemon, persisted in the ledger.

PENDING -> PROVISIONING -> RUNNING <-> PAUSED -> DRAINING -> COMPLETED | CANCELLED, and FAILED
from any live state. Illegal transitions raise :class:`IllegalTransition` (HTTP 409). Every
``checkpoint_interval`` each live run writes, in one transaction, per stream the seq below
which every event is accounted for and the counters of exactly those events; a daemon that
restarts (even after ``kill -9``) resumes its live runs from there: events after the mark are
sent again (duplicates, counted), none is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
import yaml

from datafactory.config import Config, ConfigError, parse_config
from datafactory.control.fleet import Fleet, fleet_wanted, may_be_sharded
from datafactory.control.fleet_view import FleetView
from datafactory.control.leases import open_shards
from datafactory.control.ledger import Ledger, RunRecord
from datafactory.lifecycle.registry import state_dir
from datafactory.runtime.diff import diff, edit
from datafactory.runtime.engine import Engine
from datafactory.runtime.shards import Shards, per_shard
from datafactory.states import StateError, allowed_locations, check_location
from datafactory.telemetry.metrics import Metrics

log = structlog.get_logger("datafactory.runs")


class State(StrEnum):
    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    DRAINING = "DRAINING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ALLOWED: dict[State, set[State]] = {
    State.PENDING: {State.PROVISIONING, State.CANCELLED, State.FAILED},
    State.PROVISIONING: {State.RUNNING, State.DRAINING, State.FAILED, State.CANCELLED},
    State.RUNNING: {State.PAUSED, State.DRAINING, State.FAILED},
    State.PAUSED: {State.RUNNING, State.DRAINING, State.FAILED},
    State.DRAINING: {State.COMPLETED, State.CANCELLED, State.FAILED},
    State.COMPLETED: set(),
    State.FAILED: set(),
    State.CANCELLED: set(),
}
LIVE = {State.PROVISIONING, State.RUNNING, State.PAUSED, State.DRAINING}
TERMINAL = {State.COMPLETED, State.FAILED, State.CANCELLED}


class IllegalTransition(Exception):
    def __init__(self, run_id: str, frm: State, to: State, action: str) -> None:
        super().__init__(f"run {run_id} is {frm}: cannot {action} (would go {frm} -> {to})")


class NotFound(KeyError):
    pass


class Run:
    def __init__(self, record: RunRecord, config: Config) -> None:
        self.record = record
        self.config = config
        self.state = State(record.state)
        self.engine: Engine | Shards | FleetView | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False
        self.base: dict[tuple[str, str], dict[str, int]] = {}  # counters before a restart
        self.errors: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    @property
    def id(self) -> str:
        return self.record.id

    def counters(self, at_mark: bool = False) -> dict[tuple[str, str], dict[str, int]]:
        live = self.engine.counters(at_mark) if self.engine is not None else {}
        out: dict[tuple[str, str], dict[str, int]] = {}
        for key in set(live) | set(self.base):
            b, v = self.base.get(key, {}), live.get(key, {})
            out[key] = {
                c: (int(v.get(c, b.get(c, 0))) if c == "generated" else b.get(c, 0) + v.get(c, 0))
                for c in ("generated", "chaos_dropped", "sent", "acked", "failed", "retried")
            }
        return out

    def view(self) -> dict[str, Any]:
        out = self.record.public()
        out["state"] = str(self.state)
        snap = self.engine.snapshot() if self.engine is not None else None
        out["streams"] = {
            name: {k: v for k, v in st.items() if k != "done"}
            for name, st in (snap or {}).get("streams", {}).items()
        }
        out["counters"] = [
            {"stream": st, "sink": sk, **vals} for (st, sk), vals in sorted(self.counters().items())
        ]
        out["chaos"] = (snap or {}).get("chaos", {})
        if snap is not None and "shards" in snap:  # a sharded run: each shard's streams too
            out["shards"] = snap["shards"]
        out["errors"] = self.errors[-20:]
        return out


def run_is_sharded(config: Config) -> bool:
    return config.run.shards > 1


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunManager:
    """Creates, drives and persists runs."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        owner: str = "",
        checkpoint_interval: float = 1.0,
        states: list[str] | None = None,
        data_root: Path | None = None,
        workers: int = 1,
    ) -> None:
        """``states``: where runs may read ``run.from_state`` from (the state folder only,
        by default; see :mod:`datafactory.states`). ``data_root``: where the file sinks of
        inline specs (sent over the API) may write (default ``./data``). ``workers``: worker
        processes for the shards of a sharded run (1: in this loop)."""
        self.workers = workers
        self.ledger = ledger
        self.data_root = (data_root or Path("data")).resolve()
        self.states = states if states is not None else allowed_locations()
        self.owner = owner
        self.checkpoint_interval = checkpoint_interval
        self.runs: dict[str, Run] = {}
        self._checkpointer: asyncio.Task[None] | None = None
        self.closing = False
        self.listeners: list[Any] = []  # callables(run, event) for telemetry
        # sharded runs on a shared (PostgreSQL) ledger: spread over every daemon sharing it
        self.fleet: Fleet | None = Fleet(self) if fleet_wanted(ledger) else None

    async def start(self) -> list[str]:
        """Open the ledger; resume this daemon's live runs. Returns the resumed ids."""
        await self.ledger.open()
        resumed = []
        for rec in await self.ledger.runs():
            fleet = self._fleet_run(rec.config)
            if State(rec.state) in TERMINAL or (
                rec.owner and rec.owner != self.owner and not fleet
            ):
                continue
            try:
                config = parse_config(rec.config, f"run {rec.id}")
            except ConfigError as e:
                await self.ledger.transition(rec.id, rec.state, State.FAILED, "resume", str(e))
                continue
            if fleet and run_is_sharded(config):  # the fleet takes its shards, here or anywhere
                self.fleet_synced(rec, config)
                continue
            run = Run(rec, config)
            self.runs[rec.id] = run
            marks = await self.ledger.checkpoints(rec.id)
            run.base = await self.ledger.counters(rec.id)
            if run.state == State.PENDING:
                continue
            log.info("run_resuming", run=rec.id, marks={k: v[0] for k, v in marks.items()})
            paused = run.state == State.PAUSED
            # the daemon stopped or died under it: provision again, go on from the marks
            self._launch(run, {k: v[0] for k, v in marks.items()}, paused=paused, resumed=True)
            resumed.append(rec.id)
        self._checkpointer = asyncio.create_task(self._checkpoints(), name="checkpoints")
        if self.fleet is not None:
            await self.fleet.start()
        return resumed

    def _fleet_run(self, text: str) -> bool:
        """Could this run be a fleet run (cheap: the parse that decides comes after)?"""
        return self.fleet is not None and may_be_sharded(text)

    def fleet_synced(self, rec: RunRecord, config: Config) -> None:
        """The fleet read a sharded run from the ledger: this daemon's view of it follows."""
        run = self.runs.get(rec.id)
        if run is None:
            if State(rec.state) in TERMINAL or self.fleet is None:
                return
            run = self.runs[rec.id] = Run(rec, config)
            run.engine = FleetView(self.fleet, rec.id)
        if rec.state != run.state:
            frm, run.state = run.state, State(rec.state)
            run.record.state = rec.state
            for listener in self.listeners:
                listener(run, {"type": "state", "from": str(frm), "to": str(run.state)})
        if rec.config_hash != run.record.config_hash:
            run.record.config, run.record.config_hash = rec.config, rec.config_hash
            run.config = config

    async def close(self, drain: bool = True) -> None:
        """Stop every live run (drain: what was released is written) and checkpoint. The runs
        stay live in the ledger: the next start of the daemon resumes them."""
        self.closing = True
        if self.fleet is not None:
            await self.fleet.close()
        for run in list(self.runs.values()):
            if run.engine is not None and run.state in LIVE:
                run.engine.stop(suspend=True)  # resumed at the next start
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        if drain and tasks:
            await asyncio.wait(tasks, timeout=25)
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        await self.ledger.close()

    # -- queries ----------------------------------------------------------------------------

    def get(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise NotFound(run_id)
        return run

    async def history(self, run_id: str) -> list[dict[str, Any]]:
        rec = await self.ledger.get(run_id)
        return rec.history if rec is not None else []

    # -- commands ---------------------------------------------------------------------------

    async def create(self, text: str, source: str, *, start: bool = True) -> Run:
        """A run from config text (validated: ConfigError on any problem)."""
        config = await asyncio.to_thread(parse_config, text, source)  # bounded, off the loop
        if config.run.from_state is not None:  # refused before anything is opened
            try:
                check_location(config.run.from_state, self.states)
            except StateError as e:
                raise ConfigError(source, [(("run", "from_state"), str(e))]) from None
        if source == "inline":  # sent over the API: its files stay under the data root
            self._confine(config, source)
        now = time.time()
        rec = RunRecord(
            id=uuid.uuid4().hex[:12],
            name=config.run.name,
            state=State.PENDING,
            config=text,
            config_hash=config_hash(text),
            source=source,
            created=now,
            updated=now,
            owner=self.owner,
        )
        await self.ledger.create_run(rec)
        run = Run(rec, config)
        self.runs[rec.id] = run
        log.info("run_created", run=rec.id, name=rec.name, source=source)
        if start:
            await self.start_run(rec.id)
        return run

    async def start_run(self, run_id: str) -> Run:
        run = self.get(run_id)
        self._check(run, State.PROVISIONING, "start")
        self._launch(run, {})
        return run

    async def pause(self, run_id: str) -> Run:
        run = self.get(run_id)
        async with run._lock:
            self._check(run, State.PAUSED, "pause")
            assert run.engine is not None
            run.engine.pause()
            await self._move(run, State.PAUSED, "api")
        return run

    async def resume(self, run_id: str) -> Run:
        run = self.get(run_id)
        async with run._lock:
            if run.state != State.PAUSED:
                raise IllegalTransition(run.id, run.state, State.RUNNING, "resume")
            if run.engine is None:  # a restarted paused run whose engine is being built
                raise IllegalTransition(run.id, run.state, State.RUNNING, "resume it yet")
            run.engine.resume()
            await self._move(run, State.RUNNING, "api")
        return run

    async def stop(self, run_id: str) -> Run:
        run = self.get(run_id)
        async with run._lock:
            if run.state == State.PENDING:
                await self._move(run, State.CANCELLED, "api")
                return run
            self._check(run, State.DRAINING, "stop")
            run.cancelled = True
            if isinstance(run.engine, FleetView):  # every daemon stops its shards
                await self._move(run, State.DRAINING, "stop")
            if run.engine is not None:
                run.engine.stop()
        return run

    async def rebalance(self, run_id: str) -> Run:
        """A run spread over the fleet: this daemon gives back the shards above its fair share
        (drained at a checkpoint) for the daemons below theirs to take."""
        run = self._live(run_id, "rebalance")
        if self.fleet is None or not isinstance(run.engine, FleetView):
            raise IllegalTransition(run.id, run.state, run.state, "rebalance a run not spread")
        result = await self.fleet.rebalance(run.id)
        log.info("run_rebalanced", run=run.id, **result)
        return run

    async def set_rate(self, run_id: str, stream: str, profile: Any) -> Run:
        """A stream's new rate profile: an edit of the run's config, applied as a reload."""
        run = self._live(run_id, "change a rate")
        plan = next((p for p in run.config.streams if stream in (p.event_type, p.stream)), None)
        if plan is None:
            names = ", ".join(p.event_type for p in run.config.streams)
            raise NotFound(f"stream {stream!r} (streams: {names})")
        rate = profile.model_dump(mode="json", by_alias=True)
        await self.edit(run.id, {"packs": {plan.pack: {"streams": {plan.stream: {"rate": rate}}}}})
        log.info("rate_changed", run=run.id, stream=plan.event_type)
        return run

    async def set_chaos(
        self, run_id: str, steps: list[Any] | None, rates: dict[str, float] | None = None
    ) -> Run:
        """The whole chaos list (``steps``), or new rates of steps by name: an edit of the run's
        config, validated like a config file (the same cross-checks, the same errors)."""
        run = self._live(run_id, "change chaos")
        if steps is None:
            steps = yaml.safe_load(run.record.config).get("chaos") or []
            names = [c.get("name") or c.get("step") if isinstance(c, dict) else None for c in steps]
            unknown = [n for n in rates or {} if n not in names]
            if unknown:  # a step the run does not have: not found, like a run or a stream
                steps_now = ", ".join(map(str, names)) or "none"
                raise NotFound(f"chaos step {unknown[0][:64]!r} (steps: {steps_now})")
            for name, c in zip(names, steps, strict=True):
                if name in (rates or {}):
                    c["rate"] = (rates or {})[name]
        await self.edit(run.id, {"chaos": steps})
        log.info("chaos_changed", run=run.id, steps=len(steps))
        return run

    async def edit(self, run_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Apply ``overrides`` to a live run's config text, through the one reload path."""
        run = self._live(run_id, "change")
        text = edit(run.record.config, overrides, run.config)
        result = await self.reload(run.id, text)
        if result["needs_restart"]:  # not for rates and chaos; said rather than half-done
            raise IllegalTransition(run.id, run.state, run.state, "change this live")
        return result

    def _live(self, run_id: str, action: str) -> Run:
        run = self.get(run_id)
        if run.state not in LIVE:
            raise IllegalTransition(run.id, run.state, run.state, action)
        return run

    async def reload(self, run_id: str, text: str) -> dict[str, Any]:
        """Apply a new version of a run's config live (chaos, rates); raises ConfigError."""
        run = self.get(run_id)
        new = await asyncio.to_thread(parse_config, text, run.record.source)
        if run.state not in LIVE:
            raise IllegalTransition(run.id, run.state, run.state, "reload")
        if run.engine is not None:
            result = await run.engine.reload(new)
        else:  # still provisioning: its engine is built from this config
            d = diff(run.config, new)
            result = {"applied": [] if d.restart else d.described(), "needs_restart": [*d.restart]}
        if not result["needs_restart"]:
            run.config = new
            run.record.config, run.record.config_hash = text, config_hash(text)
            await self.ledger.set_config(run.id, text, run.record.config_hash)
        return result

    # -- internals --------------------------------------------------------------------------

    def _confine(self, config: Config, source: str) -> None:
        sinks: list[tuple[tuple[str, ...], Any]] = [
            (("sinks", n), s) for n, s in config.sinks.items()
        ]
        if config.manifest_sink is not None:
            sinks.append((("manifest", "sink"), config.manifest_sink))
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for loc, sink in sinks:
            path = getattr(sink, "path", None) if sink.type == "file" else None
            if path is None:
                continue
            where = Path(path).resolve()  # where the sink will write (relative: to the cwd)
            if not where.is_relative_to(self.data_root):
                problems.append(
                    (
                        (*loc, "path"),
                        f"{path!r} is outside this daemon's data root ({self.data_root}): "
                        "a run sent over the API writes files under it only",
                    )
                )
        if problems:
            raise ConfigError(source, problems)

    def _check(self, run: Run, to: State, action: str) -> None:
        if to not in ALLOWED[run.state]:
            raise IllegalTransition(run.id, run.state, to, action)

    async def _move(
        self, run: Run, to: State, reason: str, error: str = "", force: bool = False
    ) -> None:
        frm = run.state
        if not force and to not in ALLOWED[frm]:
            raise IllegalTransition(run.id, frm, to, reason)
        run.state = to
        run.record.state = to
        run.record.error = error  # what the ledger keeps: the view says it too
        await self.ledger.transition(run.id, frm, to, reason, error)
        log.info("run_state", run=run.id, frm=str(frm), to=str(to), reason=reason)
        for listener in self.listeners:
            listener(run, {"type": "state", "from": str(frm), "to": str(to)})

    def _launch(
        self, run: Run, marks: dict[str, int], *, paused: bool = False, resumed: bool = False
    ) -> None:
        run.task = asyncio.create_task(self._execute(run, marks, paused, resumed), name=run.id)

    async def _execute(self, run: Run, marks: dict[str, int], paused: bool, resumed: bool) -> None:
        phases: asyncio.Queue[str] = asyncio.Queue()
        try:
            if run.state != State.PROVISIONING:
                await self._move(
                    run, State.PROVISIONING, "restart" if resumed else "start", force=resumed
                )
            from datafactory.batch.simulate import load_run_state

            engine: Engine | Shards
            if self.fleet is not None and run_is_sharded(run.config):
                # spread over the fleet: the lease rows, and every daemon takes its share
                await open_shards(self.ledger, run.id, run.config.run.shards)
                run.engine = FleetView(self.fleet, run.id)
                await self._move(run, State.RUNNING, "provisioned")
                return
            if run.config.run.shards > 1:  # each shard from its own marks
                per = per_shard(marks, run.config.run.shards)
                engine = Shards(
                    run.config,
                    {i: m or None for i, m in per.items()},
                    workers=self.workers,
                    journal=state_dir() / "runs" / run.id,
                    buffers=state_dir() / "buffers" / run.id,
                    on_phase=phases.put_nowait,
                )
            else:
                # a batch's history to continue
                state = await load_run_state(run.config, self.states)
                engine = Engine(
                    run.config,
                    metrics=Metrics(),
                    resume=marks,
                    on_phase=phases.put_nowait,
                    state=state,
                    buffers=state_dir() / "buffers" / run.id,
                    journal=state_dir() / "runs" / run.id,
                )
            run.engine = engine
            if paused:
                engine.pause()
            if run.cancelled:  # stopped while it was being built
                engine.stop()
            task = asyncio.create_task(engine.run())
            follower = asyncio.create_task(self._follow(run, phases, paused))
            try:
                run.summary = await task
            finally:
                await phases.put("")
                await follower
            await self._save(run)
            if self.closing and not run.cancelled and engine.stopping:
                log.info("run_suspended", run=run.id, marks=engine.marks())
                return  # the daemon is shutting down: resumed at its next start
            failed = sum(sum(s["failed"].values()) for s in run.summary["sinks"].values())
            if run.state != State.DRAINING:
                await self._move(run, State.DRAINING, "end", force=True)
            end = State.CANCELLED if run.cancelled else State.COMPLETED
            note = f"{failed} events failed" if failed > run.summary["failed_intentionally"] else ""
            await self._move(run, end, "drained", note)
            engine.forget()  # over: nothing will replay its journal
        except Exception as e:
            run.errors.append({"at": time.time(), "error": str(e)})
            log.error("run_failed", run=run.id, error=str(e))
            with contextlib.suppress(Exception):
                await self._save(run)
            if run.state not in TERMINAL:
                await self._move(run, State.FAILED, "error", str(e), force=True)

    async def _follow(self, run: Run, phases: asyncio.Queue[str], paused: bool) -> None:
        while True:
            phase = await phases.get()
            if phase == "running" and run.state == State.PROVISIONING:
                await self._move(
                    run, State.PAUSED if paused else State.RUNNING, "provisioned", force=paused
                )
            elif phase == "draining" and run.state in (
                State.RUNNING,
                State.PAUSED,
                State.PROVISIONING,
            ):
                why = "stop" if run.cancelled else "shutdown" if self.closing else "end"
                await self._move(run, State.DRAINING, why)
            elif phase == "":
                return

    async def _save(self, run: Run) -> None:
        if run.engine is None or isinstance(run.engine, FleetView):  # the fleet's to save
            return
        marks = run.engine.marks()
        await self.ledger.checkpoint(
            run.id, {k: (m, r) for k, (m, r) in marks.items()}, run.counters(at_mark=True)
        )
        run.engine.checkpointed({k: m for k, (m, _) in marks.items()})

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            for run in list(self.runs.values()):
                if run.engine is not None and run.state in LIVE:
                    try:
                        await self._save(run)
                    except Exception as e:  # a ledger hiccup must not stop the runs
                        log.error("checkpoint_failed", run=run.id, error=repr(e))
