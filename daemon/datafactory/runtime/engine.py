"""A stream-mode run: pack streams -> pacing -> chaos chain -> every sink's own delivery.

The engine builds the run from a validated config and owns its parts; each part is its own
module: the driver (:mod:`.drive`: the one way a pack is driven), the stream loops
(:mod:`.pacing`: when slices are released), delivery (:mod:`.delivery`: per-sink buffers,
encoding, retries), accounting (:mod:`.accounting`: the checkpoint mark) and the config diff
(:mod:`.diff`: ``apply`` is the only way a live run changes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from datafactory.chaos import StepConfig, applies, build_chain
from datafactory.chaos.base import Fault, FaultLog
from datafactory.chaos.manifest import Manifest
from datafactory.config import Config, StreamPlan
from datafactory.engine.blocks import RecordBlock, concat
from datafactory.engine.clock import Clock, SimulatedClock, WallClock
from datafactory.lifecycle.manager import Lifecycle
from datafactory.lifecycle.registry import state_dir
from datafactory.pack import Pack, Shard, registered_sinks
from datafactory.runtime import report
from datafactory.runtime.accounting import SliceBook
from datafactory.runtime.delivery import SinkDelivery, off_loop
from datafactory.runtime.diff import Diff, diff
from datafactory.runtime.journal import Journal, Store
from datafactory.runtime.pacing import RunHandle, StreamRuntime, run_driven, run_paced
from datafactory.runtime.spill import safe_name
from datafactory.runtime.start import start
from datafactory.runtime.writes import Retry
from datafactory.sinks.base import Sink, SinkContext
from datafactory.telemetry.metrics import Metrics

log = structlog.get_logger("datafactory.engine")


class Engine:
    """Builds a run from a validated config and runs it until its streams end or ``stop()``."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        sink_factory: Callable[[str, Any, SinkContext], Sink] | None = None,
        wall_clock: Clock | None = None,
        retry_backoff: float | None = None,
        max_attempts: int | None = None,
        resume: dict[str, int] | None = None,
        on_phase: Callable[[str], None] | None = None,
        state: dict[str, Any] | None = None,
        buffers: Path | None = None,
        journal: Path | Store | None = None,
        shard: Shard | None = None,
        endpoints: dict[str, str] | None = None,
        origin: float | None = None,
    ) -> None:
        """``state``: a batch run's final state (``datafactory.batch.simulate.load_state``):
        the packs go on from it, each stream from the seq after the history's last.
        ``buffers``: the folder of this run's disk buffers (default: under the state folder,
        by run name); a run started again with the same folder drains what is left there.
        ``journal``: the folder of this run's journal (:mod:`.journal`, daemon runs); with
        ``resume``, the run replays it and goes on as the same simulation.
        ``shard``: this engine runs one shard of a sharded run (its own entities, seqs and
        part of each rate). ``endpoints``: the run's sinks were provisioned by whoever runs
        its shards (:mod:`.shards`), with local stand-ins at these addresses: this engine
        neither provisions nor tears down. ``origin``: when the run began (epoch s; default:
        now): a sharded run's shards start their streams at the same instant, so what one
        shard creates at the start (a catalogue) is not later than what another does with it."""
        self.config = config
        self.shard = shard or Shard()
        self.endpoints = endpoints
        self.metrics = metrics or Metrics()
        eng = config.model.engine
        retry = Retry(
            eng.max_attempts if max_attempts is None else max_attempts,
            eng.retry_backoff if retry_backoff is None else retry_backoff,
            eng.retry_backoff_max,
        )
        self._stop = asyncio.Event()
        self._suspend = False
        self._running = asyncio.Event()
        self._running.set()
        self.on_phase = on_phase
        self._started_at: float | None = None
        # events a removed chain still held, sent with the stream's next slice
        self._late: list[tuple[StreamRuntime, RecordBlock]] = []
        ctx = SinkContext(config.run.name, config.run.seed, self.shard)
        sink_types = registered_sinks()
        make_sink = sink_factory or (lambda n, c, x: sink_types[c.type](n, c, x))
        buffers = buffers or state_dir() / "buffers" / safe_name(config.run.name)
        self.sinks: dict[str, SinkDelivery] = {
            name: SinkDelivery(
                name,
                make_sink(name, scfg, ctx),
                scfg.buffer,
                retry,
                self.metrics,
                self._truth,
                buffers / safe_name(name),
            )
            for name, scfg in config.sinks.items()
        }
        # a simulated clock starts at run.start, or where a batch's history ended
        self._sim_start = (
            state["time_us"] / 1e6
            if state is not None and config.run.start is None
            else config.run.start_epoch()
        )
        self.journal = Journal(journal) if journal is not None else None
        self._origin = origin
        begun = start(
            config, self._sim_start or time.time(), state, self.journal, resume, self.shard
        )
        self.packs: dict[str, Pack] = begun.packs
        self.driver, again = begun.driver, begun.again
        self._wall_clock = wall_clock
        self._streaming = False
        self.streams: list[StreamRuntime] = []
        for plan in config.streams:
            s = self._build_stream(plan, (resume or {}).get(plan.event_type))
            if again is not None:
                s.resumed, s.resend = True, again.get(s.name, [])
            self.streams.append(s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._handle = RunHandle(
            self.driver,
            eng,
            self._stop,
            self._running,
            lambda: self.streams,
            self._emit,
            self._on_released,
            self._on_skipped,
        )
        # chaos: one chain per stream; faults go to the metrics and the manifest
        self.chaos_counts: dict[tuple[str, str, str], int] = {}
        self.manifest: Manifest | None = None
        if config.manifest_sink is not None:
            msink = sink_types[config.manifest_sink.type]("manifest", config.manifest_sink, ctx)
            mcfg = config.model.manifest
            assert mcfg is not None
            self.manifest = Manifest(
                msink,
                mcfg.format,
                mcfg.flush,
                config.run.name,
                config.run.seed,
                lambda: {s.name: s.released for s in self.streams},
                self.shard,
                self._truth_barrier,
            )
        self._set_chaos(list(config.chaos))

    def _build_stream(self, plan: StreamPlan, mark: int | None = None) -> StreamRuntime:
        """The stream of a lane (added now if new: a stream added live); ``mark``: where its
        checkpoint was (what a resumed stream's accounting starts from)."""
        simulated = self.config.run.clock == "simulated"
        clock: Clock = (
            SimulatedClock(self._sim_start) if simulated else (self._wall_clock or WallClock())
        )
        # the profile starts when the stream starts (set again then)
        lane = self.driver.lanes.get(plan.event_type) or self.driver.add(plan, t0=clock.now())
        targets = [self.sinks[s] for s in plan.sinks]
        gated = self.config.manifest_sink is not None  # the mark waits for the manifest
        book = SliceBook(lane.seq if mark is None else mark, gated=gated)
        s = StreamRuntime(plan, lane.pack, lane, clock, targets, book)
        s.first_seq = self.shard.seq_base
        s.max_events = None if plan.max_events is None else self.shard.split(plan.max_events)
        s.generated = s.released = lane.seq - s.first_seq
        for k in targets:
            k.add_stream(s.name, lane.gen.schema, self.config.run.seed)
        return s

    def _start_stream(self, s: StreamRuntime, at_us: int | None = None) -> None:
        """``at_us``: when it starts (default: now)."""
        if s.resumed and s.lane.at_us is not None:  # goes on along its journaled timeline
            s.start_us = round(s.lane.t0 * 1e6)
        else:
            s.start_us = s.clock.now_us() if at_us is None else at_us
            self.driver.start(s.name, s.start_us)  # the profile starts when the stream starts
        if s.chaos is not None:
            s.chaos.start(s.start_us)
        if self.config.run.duration is not None:
            s.end_us = s.start_us + round(self.config.run.duration * 1e6)
        s.released_until_us = s.lane.at_us if s.resumed and s.lane.at_us else s.start_us
        loop = run_driven if s.driven else run_paced
        self._tasks.add(asyncio.create_task(loop(s, self._handle), name=f"pace:{s.name}"))

    async def _add_stream(self, plan: StreamPlan) -> None:
        """Start a new stream of an existing pack into existing sinks, live."""
        s = self._build_stream(plan)
        seed = self.config.run.seed
        s.chaos = build_chain(self.chaos_configs, s.name, s.lane.gen.schema, seed, self._faults)
        for k in s.sinks:  # its topic / stream must exist before the first event
            await k.sink.provision([s.name])
        self.streams.append(s)
        if self._streaming:
            self._start_stream(s)
        log.info("stream_added", stream=s.name, sinks=[k.name for k in s.sinks])

    # -- changes: apply(diff) is the one door ----------------------------------------------

    async def reload(self, new: Config) -> dict[str, Any]:
        """``apply(diff(running config, new))``: what SIGHUP and the daemon's reloads call."""
        return await self.apply(diff(self.config, new))

    async def apply(self, d: Diff) -> dict[str, Any]:
        """The one way a live run changes: chaos steps, stream rates, streams added or removed.
        What cannot change live is named instead, and then nothing changes. ``d.new`` is
        validated; it becomes the running config (what the next diff starts from)."""
        restart = list(d.restart)
        gone = {s.name for s in self.streams if s.removed}
        restart += [f"streams.{x}" for x in d.streams.to_add if x in gone]  # a stopped stream
        if restart:
            return {"applied": [], "needs_restart": restart}
        applied: list[str] = []
        if d.chaos:
            self._set_chaos(list(d.new.chaos))
            applied.append("chaos")
        plans = {p.event_type: p for p in d.new.streams}
        for s in self.streams:
            if s.name in d.streams.to_remove and not s.removed:
                s.removed = True  # what it released is still written
                applied.append(f"removed:{s.name}")
            elif s.name in d.streams.to_change and not s.removed:
                s.plan = plans[s.name]
                s.new_profile = s.plan.rate  # from its next slice on
                applied.append(f"rate:{s.name}")
        for name in d.streams.to_add:
            await self._add_stream(plans[name])
            applied.append(f"added:{name}")
        self.config = d.new
        return {"applied": applied, "needs_restart": []}

    def _set_chaos(self, configs: list[StepConfig]) -> None:
        """Steps that keep their name and kind change rate and schedule in place; any other
        change builds a new chain, which takes over the events the old one held back."""
        for s in self.streams:
            old = s.chaos
            mine = [c for c in configs if applies(c, s.name)]
            if old is not None and [(x.name, x.cfg.step) for x in old.steps] == [
                (c.name or c.step, c.step) for c in mine
            ]:
                for step, cfg in zip(old.steps, mine, strict=True):
                    step.update(cfg)
                continue
            seed = self.config.run.seed
            new = build_chain(configs, s.name, s.lane.gen.schema, seed, self._faults)
            if new is not None and old is not None:
                new.adopt(old)
                new.start(old.steps[0].t0_us if old.steps else 0)
            elif new is not None and self._started_at is not None:
                new.start(s.start_us)
            elif new is None and old is not None:
                rest = old.flush()
                if rest is not None:
                    self._late.append((s, rest))
            s.chaos = new
        self.chaos_configs = list(configs)

    def stop(self, suspend: bool = False) -> None:
        """Stop releasing events; what was released is written before ``run`` returns.
        ``suspend``: the run goes on at the daemon's next start, so disk buffers keep what
        they hold (and take what is in memory) instead of waiting for their sinks."""
        self._suspend = suspend
        self._stop.set()
        self._running.set()  # a paused run stops too

    def pause(self) -> None:
        """Release nothing until ``resume``; what is in flight is still written."""
        if self._running.is_set():
            for s in self.streams:
                s.paused_at_us = s.clock.now_us()
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- release: ground truth, chaos, the sinks ---------------------------------------------

    async def _emit(
        self, s: StreamRuntime, piece: RecordBlock, end_seq: int, chaos: bool = True
    ) -> None:
        """A released slice: labels to ground truth, through the chaos chain (``chaos``:
        not what the chain itself let out at the end), to every sink of the stream."""
        if self.journal is not None:  # no event goes out before the commands that made it
            await self.journal.store.durable()
        if piece.labels:  # the pack's own domain errors: ground truth too
            domain = FaultLog()
            domain.add_labels(s.pack.name, piece)
            self._faults(domain)
            piece.labels = ()
        if s.chaos is not None and chaos:
            piece, faults = await off_loop(len(piece), s.chaos.apply, piece)
            self._faults(faults)
        if self._late:
            mine = [b for t, b in self._late if t is s]
            if mine:
                self._late = [(t, b) for t, b in self._late if t is not s]
                piece = concat([piece, *mine])
        s.book.hold(self._held_below(s))
        if not len(piece):
            return
        sid = s.book.open(end_seq, len(s.sinks), int(piece.seq.min()))
        for k in s.sinks:
            await k.offer(s.name, piece, sid, s.book)

    def _on_released(self, s: StreamRuntime, n: int) -> None:
        self.metrics.generated.labels(s.name).inc(n)
        self.metrics.released.labels(s.name).inc(n)

    def _on_skipped(self, s: StreamRuntime, n: int) -> None:
        self.metrics.skipped.labels(s.name).inc(n)
        log.warning("stream_behind", stream=s.name, skipped=n, total_skipped=s.skipped)

    def _faults(self, faults: FaultLog) -> None:
        for f in faults.items:
            key = (f.stream, f.name, f.kind)
            self.chaos_counts[key] = self.chaos_counts.get(key, 0) + len(f.seq)
            self.metrics.chaos_injected.labels(*key).inc(len(f.seq))
        self._truth(faults.items)

    def _held_below(self, s: StreamRuntime) -> int | None:
        """The lowest seq of ``s`` still held back (by its chain, or left by a removed one)."""
        lows = [int(b.seq.min()) for t, b in self._late if t is s and len(b)]
        if s.chaos is not None and (low := s.chaos.lowest_held()) is not None:
            lows.append(low)
        return min(lows) if lows else None

    def _truth_barrier(self) -> Callable[[], None]:
        """The manifest is taking its pending faults: once written, every stream's mark may
        pass the slices they belong to."""
        at = [(s.book, s.book.truth_barrier()) for s in self.streams]

        def written() -> None:
            for book, barrier in at:
                book.truth_written(barrier)

        return written

    def _truth(self, faults: list[Fault]) -> None:
        """Faults injected, events shed, bytes rendered: into the manifest."""
        if self.manifest is not None and faults:
            self.manifest.add(faults)

    # -- views -----------------------------------------------------------------------------

    def marks(self) -> dict[str, tuple[int, int]]:
        """Per stream: (every event below this seq is accounted for, events released)."""
        return {s.name: (s.book.mark, s.released) for s in self.streams}

    def counters(self, at_mark: bool = False) -> dict[tuple[str, str], dict[str, int]]:
        """Per stream x sink, for the ledger. ``at_mark``: only the slices below each
        stream's mark, so the counters and the checkpoint agree (what a restart resumes)."""
        return report.counters(self.streams, self.chaos_counts, at_mark)

    def snapshot(self) -> dict[str, Any]:
        return report.snapshot(self.streams, self.sinks.values(), self.chaos_counts)

    # -- run -------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self._started_at = time.monotonic()
        sinks = {k.name: k.sink for k in self.sinks.values()}
        manifest = self.manifest.sink if self.manifest is not None else None
        lifecycle = Lifecycle.of(self.config, sinks, manifest)
        try:
            if self.endpoints is not None:  # provisioned for this shard: point at the stand-ins
                for sink in sinks.values():
                    service = sink.local_service()
                    if service is not None:
                        sink.use_local(self.endpoints[service])
                return await self._run_provisioned()
            await lifecycle.start()
            try:
                return await self._run_provisioned()
            finally:
                await lifecycle.stop()
        finally:
            if self.journal is not None:  # whatever happened: a restart reads what it has
                self.journal.close()

    async def _run_provisioned(self) -> dict[str, Any]:
        assert self._started_at is not None
        for k in self.sinks.values():
            await k.connect()
            k.restore()
        if self.manifest is not None:
            await self.manifest.sink.connect()
        run = self.config.run
        names = [s.name for s in self.streams]
        log.info("run_started", run=run.name, seed=run.seed, clock=run.clock, streams=names)
        if self.on_phase is not None:
            self.on_phase("running")
        self._streaming = True
        began = None if self._origin is None else round(self._origin * 1e6)
        for s in self.streams:
            self._start_stream(s, None if run.clock == "simulated" else began)
        writers = [asyncio.create_task(k.run(), name=f"sink:{k.name}") for k in self.sinks.values()]
        sampler = asyncio.create_task(
            report.sample(lambda: self.streams, self.sinks.values(), self.metrics), name="sampler"
        )
        interval = self.config.model.engine.snapshot_interval
        snapshots = asyncio.create_task(
            self.journal.snapshots(self.driver, interval) if self.journal else asyncio.sleep(0),
            name="snapshots",
        )
        manifest_loop = (
            asyncio.create_task(self.manifest.loop(), name="manifest")
            if self.manifest is not None
            else None
        )
        streaming_since = time.monotonic()
        streaming_seconds = 0.0
        try:
            while pending := [t for t in self._tasks if not t.done()]:  # live adds join
                await asyncio.wait(pending)
            for t in self._tasks:
                t.result()  # a stream's failure is the run's
            if self.on_phase is not None:
                self.on_phase("draining")
            for k in self.sinks.values():
                k.close(self._suspend)
            await asyncio.gather(*writers)
            streaming_seconds = time.monotonic() - streaming_since
        finally:
            if manifest_loop is not None and self.manifest is not None:
                # let a flush in progress finish: cancelling it would lose what it was writing
                self.manifest.stop()
                await asyncio.gather(manifest_loop, return_exceptions=True)
            tasks = [sampler, snapshots, *self._tasks, *writers]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close()
        return self._summary(streaming_seconds)

    async def _close(self) -> None:
        if self.manifest is not None:
            try:
                await self.manifest.flush(final=not self._suspend)
            finally:
                await self.manifest.sink.close()
        for k in self.sinks.values():
            try:
                await k.sink.close()
            except Exception as e:  # closing must not hide the run's own outcome
                log.error("sink_close_failed", sink=k.name, error=repr(e))

    def _summary(self, streaming_seconds: float) -> dict[str, Any]:
        summary = report.summary(self.streams, self.sinks.values(), self.chaos_counts)
        # from the first event to the last acknowledgement (no provisioning, no shutdown)
        summary["streaming_seconds"] = streaming_seconds
        assert self._started_at is not None
        log.info(
            "run_finished",
            run=self.config.run.name,
            released={s.name: s.released for s in self.streams},
            seconds=round(time.monotonic() - self._started_at, 3),
        )
        return summary

    def forget(self) -> None:
        """The run is over: its journal goes (nothing will replay it)."""
        if self.journal is not None:
            self.journal.remove()

    def checkpointed(self, marks: dict[str, int]) -> None:
        """The ledger holds these marks now: the journal forgets what no restart needs."""
        if self.journal is not None:
            self.journal.prune(marks)
