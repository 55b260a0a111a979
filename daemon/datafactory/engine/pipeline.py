"""The stream pipeline: pack stream -> rate controller -> chaos chain -> sinks.

Per stream, a *generator* task fills a bounded queue with blocks made ahead of time and a
*pacer* task slices them along the token bucket, stamps event times from the stream's clock,
passes each slice through the chaos chain and offers it to every target sink's delivery
(:mod:`datafactory.runtime.delivery`): each sink has its own bounded buffer and policy, so a
slow sink holds its streams back only if its policy says ``block``. What every sink is done
with is booked per stream (:mod:`datafactory.runtime.accounting`): the checkpoint mark.

With a simulated clock each stream keeps its own time, which moves only when the pacer
"sleeps" — the same code then runs as fast as the machine allows, deterministically: blocks
are generated on demand (block k once block k-1 is released), so a pack whose state follows
what was released changes it in the same order every run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from datafactory.chaos import Chain, StepConfig, applies, build_chain
from datafactory.chaos.base import Fault, FaultLog
from datafactory.chaos.manifest import STREAM as MANIFEST_STREAM
from datafactory.chaos.manifest import Manifest
from datafactory.config import Config, StreamPlan
from datafactory.engine.blocks import RecordBlock, concat
from datafactory.engine.clock import Clock, SimulatedClock, WallClock
from datafactory.engine.rate import TokenBucket, event_times
from datafactory.engine.seeding import SeedTree
from datafactory.lifecycle.manager import Lifecycle
from datafactory.pack import Pack, StreamGenerator, registered_packs, registered_sinks
from datafactory.runtime.accounting import Outcome, SliceBook
from datafactory.runtime.delivery import Retry, SinkDelivery
from datafactory.runtime.diff import Diff, diff
from datafactory.sinks.base import Sink, SinkContext
from datafactory.telemetry.metrics import Metrics

log = structlog.get_logger("datafactory.engine")

T = TypeVar("T")
# simulated clock: the most event time one slice may span (batch_max bounds it too)
SIMULATED_SLICE = 60.0
# ... unless the rate is so low that a slice would hold few events: then up to an hour
SIMULATED_SLICE_MAX = 3600.0
# wall clock: how far behind its profile a stream may fall and still catch up (a stalled loop,
# a busy machine, a sink that blocked for a moment); beyond it, the shortfall is not made up
WALL_CATCH_UP = 1.0
# a generated block holds at most this much event time at the current rate (and >= 16)
GEN_HORIZON_WALL = 10.0
GEN_HORIZON_SIMULATED = 3600.0
GEN_MIN_BLOCK = 16
# packs whose driven streams follow the clock (no paced stream): how far a simulated clock
# jumps when nothing is due, and how often the wall clock is looked at. The step only sets how
# much is released per poll (the packs step their own models; the data is the same for any
# step): 6 h gives sinks big blocks (15 min made 3x the CPU in tiny writes)
CLOCK_DRIVEN_STEP = 21_600.0
CLOCK_DRIVEN_POLL = 0.2


class BoundedQueue(asyncio.Queue[T], Generic[T]):
    """An asyncio queue that remembers the deepest it has been (its high-water mark)."""

    def __init__(self, maxsize: int, name: str, metrics: Metrics) -> None:
        super().__init__(maxsize)
        self.name = name
        self.high_water = 0
        self._depth = metrics.queue_depth.labels(name)
        metrics.queue_capacity.labels(name).set(maxsize)

    def _put(self, item: T) -> None:
        super()._put(item)
        depth = self.qsize()
        self.high_water = max(self.high_water, depth)
        self._depth.set(depth)

    def _get(self) -> T:
        item: T = super()._get()
        self._depth.set(self.qsize())
        return item


@dataclass(eq=False)
class StreamRuntime:
    plan: StreamPlan
    pack: Pack
    gen: StreamGenerator
    clock: Clock
    bucket: TokenBucket
    queue: BoundedQueue[RecordBlock | None]
    sinks: list[SinkDelivery]
    chaos: Chain | None = None
    end_time: float | None = None
    generated: int = 0
    released: int = 0
    seq_next: int = 0
    done: bool = False
    rate_now: float = 0.0
    removed: bool = False  # stopped live by a reload
    # the event time of the last release (paced streams); what driven streams follow
    released_until_us: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # driven: sources moved on
    paused_at: float = 0.0  # the stream's clock when the run was last paused
    # simulated clock: the pacer asks for each block once it has released the one before
    want: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def driven(self) -> bool:
        return self.plan.driven

    # what every sink is done with: the checkpoint mark and the counts below it
    book: SliceBook = field(default_factory=SliceBook)

    @property
    def name(self) -> str:
        return self.plan.event_type


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
    ) -> None:
        """``state``: a batch run's final state (``datafactory.batch.simulate.load_state``):
        the packs go on from it, each stream from the seq after the history's last."""
        self.config = config
        self.metrics = metrics or Metrics()
        self.seeds = SeedTree(config.run.seed)
        eng = config.model.engine
        retry = Retry(
            eng.max_attempts if max_attempts is None else max_attempts,
            eng.retry_backoff if retry_backoff is None else retry_backoff,
            eng.retry_backoff_max,
        )
        self._stop = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self.on_phase = on_phase
        self._started_at: float | None = None
        # events a removed chain still held, sent with the stream's next slice
        self._late: list[tuple[StreamRuntime, RecordBlock]] = []
        ctx = SinkContext(config.run.name, config.run.seed)
        sink_types = registered_sinks()
        self.sinks: dict[str, SinkDelivery] = {}
        for name, scfg in config.sinks.items():
            sink = (sink_factory or (lambda n, c, x: sink_types[c.type](n, c, x)))(name, scfg, ctx)
            self.sinks[name] = SinkDelivery(
                name, sink, scfg.buffer, retry, self.metrics, self._ground_truth
            )

        # a simulated clock starts at run.start, or where a batch's history ended
        self._sim_start = (
            state["time_us"] / 1e6
            if state is not None and config.run.start is None
            else config.run.start_epoch()
        )
        pack_types = registered_packs()
        self.packs: dict[str, Pack] = {
            p: state["packs"][p] if state is not None else pack_types[p](params, self.seeds)
            for p, params in config.pack_params.items()
        }
        carried: dict[str, tuple[StreamGenerator, int]] = {
            name: (gen, seq)
            for name, (gen, seq, _earned) in (state or {}).get("streams", {}).items()
        }
        self._wall_clock = wall_clock
        self._streaming = False
        self.streams: list[StreamRuntime] = []
        for plan in config.streams:
            # a resumed run goes on from its checkpoint; a run after a batch from its history
            gen, seq = carried.get(plan.event_type, (None, 0))
            start = (resume or {}).get(plan.event_type, seq)
            self.streams.append(self._build_stream(plan, start, gen))
        self._pacers: set[asyncio.Task[None]] = set()
        self._generators: set[asyncio.Task[None]] = set()

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
            )
        self._set_chaos(list(config.chaos))

    def _build_stream(
        self, plan: StreamPlan, start: int, gen: StreamGenerator | None = None
    ) -> StreamRuntime:
        config, eng = self.config, self.config.model.engine
        pack = self.packs[plan.pack]
        simulated = config.run.clock == "simulated"
        clock: Clock = (
            SimulatedClock(self._sim_start) if simulated else (self._wall_clock or WallClock())
        )
        # simulated time jumps: one wait may be long (a quiet night), wall time stays responsive
        bucket = TokenBucket(
            plan.rate,
            clock,
            burst=max(eng.pacing_interval * 2, WALL_CATCH_UP),
            max_wait=SIMULATED_SLICE_MAX if simulated else 1.0,
        )
        q2: BoundedQueue[Any] = BoundedQueue(
            eng.queue_blocks, f"gen:{plan.event_type}", self.metrics
        )
        targets = [self.sinks[s] for s in plan.sinks]
        gen = gen if gen is not None else pack.stream(plan.stream)
        rt = StreamRuntime(plan, pack, gen, clock, bucket, q2, targets, book=SliceBook(start))
        rt.seq_next = rt.generated = rt.released = start
        for k in targets:
            k.add_stream(rt.name, rt.gen.schema, config.run.seed)
        return rt

    def _start_stream(self, s: StreamRuntime) -> None:
        s.bucket.restart(s.clock.now())  # the profile starts when the stream starts
        if s.chaos is not None:
            s.chaos.start(int(s.bucket.t0 * 1_000_000))
        if self.config.run.duration is not None:
            s.end_time = s.bucket.t0 + self.config.run.duration
        s.released_until_us = int(s.bucket.t0 * 1_000_000)
        if s.driven:
            self._pacers.add(asyncio.create_task(self._pace_driven(s), name=f"pace:{s.name}"))
            return
        gen = asyncio.create_task(self._generate(s), name=f"gen:{s.name}")
        pace = asyncio.create_task(self._pace(s), name=f"pace:{s.name}")
        self._generators.add(gen)
        self._pacers.add(pace)

    async def _add_stream(self, plan: StreamPlan) -> None:
        """Start a new stream of an existing pack into existing sinks, live."""
        if any(s.name == plan.event_type for s in self.streams):
            return
        s = self._build_stream(plan, 0)
        chain = build_chain(
            self.chaos_configs, s.name, s.gen.schema, self.config.run.seed, self._faults
        )
        s.chaos = chain
        for k in s.sinks:  # its topic / stream must exist before the first event
            await k.sink.provision([s.name])
        self.streams.append(s)
        if self._streaming:
            self._start_stream(s)
        log.info("stream_added", stream=s.name, sinks=[k.name for k in s.sinks])

    def _remove_stream(self, name: str) -> None:
        """Stop releasing one stream, live; what it released is still written."""
        for s in self.streams:
            if s.name == name:
                s.removed = True
                log.info("stream_removed", stream=name)

    # -- control ---------------------------------------------------------------------------

    def _set_chaos(self, configs: list[StepConfig]) -> None:
        """Apply chaos settings, live if the run is streaming: steps that keep their name and
        kind change rate and schedule in place; any other change builds a new chain, which
        takes over the events the old one held back."""
        for s in self.streams:
            old = s.chaos
            if old is not None and [(x.name, x.cfg.step) for x in old.steps] == [
                (c.name or c.step, c.step) for c in configs if applies(c, s.name)
            ]:
                mine = [c for c in configs if applies(c, s.name)]
                for step, cfg in zip(old.steps, mine, strict=True):
                    step.update(cfg)
                continue
            new = build_chain(configs, s.name, s.gen.schema, self.config.run.seed, self._faults)
            if new is not None and old is not None:
                new.adopt(old)
                new.start(old.steps[0].t0_us if old.steps else 0)
            elif new is not None and self._started_at is not None:
                new.start(int(s.bucket.t0 * 1_000_000))
            elif new is None and old is not None:
                rest = old.flush()
                if rest is not None:
                    self._late.append((s, rest))
            s.chaos = new
        self.chaos_configs = list(configs)

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
        for name in d.streams.to_remove:
            self._remove_stream(name)
            applied.append(f"removed:{name}")
        for s in self.streams:
            if s.name in d.streams.to_change and not s.removed:
                s.bucket.set_profile(plans[s.name].rate)
                s.plan = plans[s.name]
                applied.append(f"rate:{s.name}")
        for name in d.streams.to_add:
            await self._add_stream(plans[name])
            applied.append(f"added:{name}")
        self.config = d.new
        return {"applied": applied, "needs_restart": []}

    def _faults(self, faults: FaultLog) -> None:
        if not faults.items:
            return
        for f in faults.items:
            key = (f.stream, f.name, f.kind)
            self.chaos_counts[key] = self.chaos_counts.get(key, 0) + len(f.seq)
            self.metrics.chaos_injected.labels(*key).inc(len(f.seq))
        self._ground_truth(faults.items)

    def _ground_truth(self, faults: list[Fault]) -> None:
        """Faults injected, events shed, bytes rendered: into the manifest."""
        if self.manifest is not None and faults:
            self.manifest.add(faults)

    def stop(self) -> None:
        """Stop releasing events; what was released is written before ``run`` returns."""
        self._stop.set()
        self._running.set()  # a paused run stops too

    def pause(self) -> None:
        """Release nothing until ``resume``; what is in flight is still written."""
        if self._running.is_set():
            for s in self.streams:
                s.paused_at = s.clock.now()
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def marks(self) -> dict[str, tuple[int, int]]:
        """Per stream: (every event below this seq is accounted for, events released)."""
        return {s.name: (s.book.mark, s.released) for s in self.streams}

    def counters(self, at_mark: bool = False) -> dict[tuple[str, str], dict[str, int]]:
        """Per stream x sink, for the ledger. ``at_mark``: only the slices below each
        stream's mark, so the counters and the checkpoint agree (what a restart resumes)."""
        dropped: dict[str, int] = {}
        for (stream, _, kind), n in self.chaos_counts.items():
            if kind == "drop":
                dropped[stream] = dropped.get(stream, 0) + n
        out: dict[tuple[str, str], dict[str, int]] = {}
        for s in self.streams:
            for k in s.sinks:
                o = s.book.at_mark.get(k.name, Outcome()) if at_mark else k.outcomes[s.name]
                out[(s.name, k.name)] = {
                    "generated": s.book.mark if at_mark else s.generated,
                    "chaos_dropped": dropped.get(s.name, 0),
                    "sent": o.acked + o.failed,
                    **o.as_dict(),
                }
        return out

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> dict[str, Any]:
        return {
            "streams": {
                s.name: {
                    "generated": s.generated,
                    "released": s.released,
                    "target_rate": s.bucket.rate(),
                    "rate": s.rate_now,
                    "done": s.done,
                }
                for s in self.streams
            },
            "sinks": {k.name: k.snapshot() for k in self.sinks.values()},
            "chaos": {
                f"{stream}/{name}/{kind}": n
                for (stream, name, kind), n in sorted(self.chaos_counts.items())
            },
        }

    # -- run -------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self._started_at = time.monotonic()
        sinks = {k.name: k.sink for k in self.sinks.values()}
        streams = {
            k.name: [s.name for s in self.streams if k in s.sinks] for k in self.sinks.values()
        }
        if self.manifest is not None:
            sinks["manifest"] = self.manifest.sink
            streams["manifest"] = [MANIFEST_STREAM]
        lifecycle = Lifecycle(sinks, streams)
        await lifecycle.start()
        try:
            return await self._run_provisioned()
        finally:
            await lifecycle.stop()

    async def _run_provisioned(self) -> dict[str, Any]:
        assert self._started_at is not None
        for k in self.sinks.values():
            await k.connect()
        if self.manifest is not None:
            await self.manifest.sink.connect()
        run = self.config.run
        log.info(
            "run_started",
            run=run.name,
            seed=run.seed,
            clock=run.clock,
            streams=[s.name for s in self.streams],
            sinks=list(self.sinks),
        )
        if self.on_phase is not None:
            self.on_phase("running")
        self._streaming = True
        for s in self.streams:
            self._start_stream(s)
        writers = [asyncio.create_task(k.run(), name=f"sink:{k.name}") for k in self.sinks.values()]
        sampler = asyncio.create_task(self._sample(), name="sampler")
        manifest_loop = (
            asyncio.create_task(self.manifest.loop(), name="manifest")
            if self.manifest is not None
            else None
        )
        streaming_since = time.monotonic()
        streaming_seconds = 0.0
        try:
            while True:  # streams added live join the wait
                pending = [t for t in self._pacers if not t.done()]
                if not pending:
                    break
                await asyncio.wait(pending)
            for t in self._pacers:
                t.result()  # a pacer's failure is the run's
            if self.on_phase is not None:
                self.on_phase("draining")
            for k in self.sinks.values():
                k.close()
            await asyncio.gather(*writers)
            streaming_seconds = time.monotonic() - streaming_since
        finally:
            if manifest_loop is not None and self.manifest is not None:
                # let a flush in progress finish: cancelling it would lose what it was writing
                self.manifest.stop()
                await asyncio.gather(manifest_loop, return_exceptions=True)
            tasks = [*self._generators, sampler, *self._pacers, *writers]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.manifest is not None:
                try:
                    await self.manifest.flush(final=True)
                finally:
                    await self.manifest.sink.close()
            for k in self.sinks.values():
                try:
                    await k.sink.close()
                except Exception as e:  # closing must not hide the run's own outcome
                    log.error("sink_close_failed", sink=k.name, error=repr(e))
        summary = self.snapshot()
        summary["queues"] = {
            s.queue.name: {"high_water": s.queue.high_water, "capacity": s.queue.maxsize}
            for s in self.streams
        }
        summary["queues"].update(
            {
                f"sink:{k.name}": {"high_water": k.buffer.high_water, "capacity": k.max_events}
                for k in self.sinks.values()
            }
        )
        # oversize faults a sink with a record limit refused: failed on purpose
        summary["failed_intentionally"] = sum(
            n
            for (stream, _, kind), n in self.chaos_counts.items()
            if kind == "oversize"
            for k in self.sinks.values()
            if k.sink.max_record_bytes is not None
            and any(s.name == stream for s in self.streams if k in s.sinks)
        )
        # from the first event to the last acknowledgement (no provisioning, no shutdown)
        summary["streaming_seconds"] = streaming_seconds
        log.info(
            "run_finished",
            run=run.name,
            released={s.name: s.released for s in self.streams},
            seconds=round(time.monotonic() - self._started_at, 3),
        )
        return summary

    async def _generate(self, s: StreamRuntime) -> None:
        size = self.config.model.engine.block_size
        gen, lock = s.gen, s.pack.lock
        counter = self.metrics.generated.labels(s.name)
        limit = s.plan.max_events

        def make(n: int, seq: int, t: int) -> RecordBlock:
            with lock:
                return gen.generate(n, seq, t, t)

        # blocks hold at most a horizon's worth of events at the current rate: at low rates
        # the pack's state never runs far ahead of what has been released
        horizon = GEN_HORIZON_SIMULATED if s.clock.simulated else GEN_HORIZON_WALL
        # a simulated clock generates on demand: the pack's state then changes in one order
        # (generate block k only after block k-1's releases), so the same seed gives the same
        # data even where a pack's state depends on what was released (driven streams)
        on_demand = s.clock.simulated
        try:
            while True:
                if on_demand:
                    await s.want.wait()
                    s.want.clear()
                by_time = max(GEN_MIN_BLOCK, int(s.bucket.rate() * horizon))
                n = min(size, by_time)
                if limit is not None:
                    n = min(n, limit - s.seq_next)
                if n <= 0:
                    break
                block = await asyncio.to_thread(make, n, s.seq_next, s.clock.now_us())
                s.seq_next += n
                s.generated += n
                counter.inc(n)
                await s.queue.put(block)
        except Exception as e:  # the pacer raises it: the run fails with the pack's message
            await s.queue.put(e)  # type: ignore[arg-type]
            return
        await s.queue.put(None)

    async def _pace(self, s: StreamRuntime) -> None:
        eng = self.config.model.engine
        clock, bucket = s.clock, s.bucket
        released = self.metrics.released.labels(s.name)
        t_prev = clock.now_us()
        has_hook = type(s.gen).released is not StreamGenerator.released
        block: RecordBlock | None = None
        pos = 0
        asked = 0  # a request still waiting for its tokens: asked again as it was
        try:
            while not self._stop.is_set() and not s.removed:
                if not self._running.is_set():
                    await self._running.wait()
                    bucket.skip(s.paused_at)  # paused, it earned nothing: no burst on resume
                    continue
                if block is None or pos >= len(block):
                    s.want.set()
                    block = await s.queue.get()
                    pos = 0
                    if isinstance(block, Exception):
                        raise RuntimeError(f"stream {s.name}: {block}") from block
                    if block is None:
                        break
                # wall clock: small slices keep the rate smooth; simulated: bigger ones are free
                if clock.simulated:
                    rate = max(bucket.rate(), 1e-9)
                    interval = min(max(SIMULATED_SLICE, eng.batch_max / rate), SIMULATED_SLICE_MAX)
                else:
                    interval = eng.pacing_interval
                n = max(1, min(int(bucket.rate() * interval), eng.batch_max, len(block) - pos))
                n = min(asked, len(block) - pos) if asked else n
                if s.end_time is not None and clock.now() >= s.end_time:
                    # the end: what was earned by then, slice by slice, then nothing more
                    n = bucket.take_until(s.end_time, n)
                    if n == 0:
                        break
                else:
                    wait = bucket.acquire(n)
                    if wait > 0:  # not yet: sleep (at most to the end), then ask again
                        if s.end_time is not None:
                            wait = min(wait, s.end_time - clock.now())
                        await clock.sleep(wait if clock.simulated else min(wait, 0.25))
                        asked = n
                        continue
                asked = 0
                now = clock.now_us()
                if s.end_time is not None:  # a wall clock may be past the end by now
                    now = min(now, round(s.end_time * 1_000_000))
                piece = block.take(slice(pos, pos + n))
                end_seq = int(piece.seq[-1]) + 1
                pos += n
                # spread the slice's event times over the interval since the last release,
                # along the rate profile (uniform for a constant rate)
                piece.event_time = event_times(bucket.profile, bucket.t0, t_prev, now, n)
                t_prev = now
                s.released += n
                released.inc(n)
                # the pack learns what was released (its state, its driven streams' events)
                if has_hook:
                    if len(piece) > 512:
                        await asyncio.to_thread(self._released, s, piece)
                    else:
                        self._released(s, piece)
                # only now: a driven stream may release up to here once the pack knows
                s.released_until_us = now
                self._wake_driven(s)
                if piece.labels:  # the pack's own domain errors: ground truth too
                    domain = FaultLog()
                    domain.add_labels(s.pack.name, piece)
                    self._faults(domain)
                    piece.labels = ()
                if s.chaos is not None:
                    if len(piece) > 512:  # off the loop, in parallel with encoding
                        piece, faults = await asyncio.to_thread(s.chaos.apply, piece)
                    else:
                        piece, faults = s.chaos.apply(piece)
                    self._faults(faults)
                if self._late:
                    piece = self._take_late(s, piece) or piece
                await self._send(s, piece, end_seq)
            # what chaos still holds back (delays) goes out now, late as it is
            rest = s.chaos.flush() if s.chaos is not None else None
            if self._late:
                rest = self._take_late(s, rest)
            if rest is not None and len(rest):
                await self._send(s, rest, s.released)
        finally:
            s.done = True
            self._wake_driven(s)

    def _driven_by(self, s: StreamRuntime) -> list[StreamRuntime]:
        return [x for x in self.streams if x.driven and x.pack is s.pack and not x.removed]

    def _released(self, s: StreamRuntime, piece: RecordBlock) -> None:
        with s.pack.lock:
            s.gen.released(piece)

    def _wake_driven(self, s: StreamRuntime) -> None:
        for x in self._driven_by(s):
            x.wake.set()

    async def _pace_driven(self, s: StreamRuntime) -> None:
        """A driven stream: release what the pack's simulation made, in event-time order, up
        to the time every paced stream of the pack has reached; when they are all done,
        what is due by the last of them, then end (later events have not happened yet)."""
        batch_max = self.config.model.engine.batch_max
        released = self.metrics.released.labels(s.name)
        generated = self.metrics.generated.labels(s.name)
        limit_total = s.plan.max_events
        gen, lock = s.gen, s.pack.lock

        def poll(until: int, seq: int, limit: int, final: bool) -> RecordBlock | None:
            with lock:
                return gen.poll(until, seq, limit, final)

        clock = s.clock
        try:
            while not s.removed:
                if not self._running.is_set():
                    await self._running.wait()
                s.wake.clear()  # a release from now on wakes us, even during the poll
                sources = [x for x in self.streams if x.pack is s.pack and not x.driven]
                live = [x for x in sources if not x.done]
                by_clock = not sources and type(s.pack).clock_driven
                ended = by_clock and s.end_time is not None and clock.now() >= s.end_time
                if by_clock:  # the pack's own time: up to now (the run's end at the latest)
                    until = clock.now_us()
                    if s.end_time is not None:
                        until = min(until, round(s.end_time * 1_000_000))
                else:
                    until = (
                        min(x.released_until_us for x in live)
                        if live
                        else max((x.released_until_us for x in sources), default=0)
                    )
                final = ended if by_clock else not live
                limit = batch_max
                if limit_total is not None:
                    limit = min(limit, limit_total - s.seq_next)
                    if limit <= 0:
                        break
                block = await asyncio.to_thread(poll, until, s.seq_next, limit, final)
                if block is not None and len(block):
                    n = len(block)
                    s.seq_next += n
                    s.generated += n
                    s.released += n
                    generated.inc(n)
                    released.inc(n)
                    s.released_until_us = until if by_clock else int(block.event_time[-1])
                    if block.labels:  # the pack's own ground truth (incidents, outages)
                        domain = FaultLog()
                        domain.add_labels(s.pack.name, block)
                        self._faults(domain)
                        block.labels = ()
                    if s.chaos is not None:
                        block, faults = s.chaos.apply(block)
                        self._faults(faults)
                    await self._send(s, block, s.seq_next)
                    continue  # there may be more due already
                if by_clock:
                    s.released_until_us = until
                    if ended:
                        break
                    # let time pass: a simulated clock jumps a step, the wall clock is awaited
                    if clock.simulated:
                        await clock.sleep(CLOCK_DRIVEN_STEP)
                    else:
                        await asyncio.sleep(CLOCK_DRIVEN_POLL)
                    continue
                if not live:
                    break  # every source ended and nothing more is due
                await s.wake.wait()
            rest = s.chaos.flush() if s.chaos is not None else None
            if rest is not None and len(rest):
                await self._send(s, rest, s.released)
        finally:
            s.done = True

    async def _send(self, s: StreamRuntime, piece: RecordBlock, end_seq: int) -> None:
        """To every sink of the stream, tracked for the checkpoint mark."""
        sid = s.book.open(end_seq, len(s.sinks))
        for k in s.sinks:
            await k.offer(s.name, piece, sid, s.book)

    def _take_late(self, s: StreamRuntime, piece: RecordBlock | None) -> RecordBlock | None:
        mine = [b for t, b in self._late if t is s]
        if not mine:
            return piece
        self._late = [(t, b) for t, b in self._late if t is not s]
        return concat([piece, *mine] if piece is not None else mine)

    async def _sample(self) -> None:
        """Once a second: actual and target rate per stream."""
        m = self.metrics
        last = {s.name: (s.released, time.monotonic()) for s in self.streams}
        while True:
            await asyncio.sleep(1.0)
            for s in self.streams:
                n0, t0 = last[s.name]
                now = time.monotonic()
                s.rate_now = (s.released - n0) / max(now - t0, 1e-9)
                last[s.name] = (s.released, now)
                m.actual_rate.labels(s.name).set(s.rate_now)
                m.target_rate.labels(s.name).set(s.bucket.rate())
            for k in self.sinks.values():
                k.sample()
