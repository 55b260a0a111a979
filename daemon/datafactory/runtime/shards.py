"""A sharded stream run: its shards seen and steered as one run, in this process or spread
over worker processes (one event loop each, so every core works).

A *shard* is one part of the population (``run.shards``; see :class:`datafactory.pack.Shard`):
its own entities, its own seq space, its part of each paced rate. Each shard is an
:class:`~datafactory.runtime.engine.Engine` of its own, with its own journal, buffers and
checkpoint marks, so a shard can stop in one place and go on in another. The run's sinks are
provisioned once, here (local stand-ins included); the shards' engines only write.

:class:`Shards` runs a set of shards (all of a run's, or those a daemon holds) and offers
the surface of one engine (``run``, ``stop``, ``pause``, ``reload``, ``snapshot``, ``marks``,
``counters``, ``metrics``), so the CLI and the daemon drive a sharded run as they drive any.
Its marks and counters are per shard: a stream's key is ``<stream>#<shard>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from datafactory.config import Config
from datafactory.lifecycle.manager import Lifecycle
from datafactory.pack import Shard, registered_sinks
from datafactory.sinks.base import SinkContext
from datafactory.telemetry.metrics import Families, Labelled

log = structlog.get_logger("datafactory.shards")

STATUS_INTERVAL = 0.5  # how often a worker process tells its parent how its shards are
PHASES = ("provisioning", "running", "draining", "done")


def shard_key(stream: str, shard: int) -> str:
    """A shard's stream in the ledger's marks and counters."""
    return f"{stream}#{shard}"


def split_key(key: str) -> tuple[str, int]:
    stream, _, shard = key.rpartition("#")
    return stream, int(shard)


def per_shard(marks: dict[str, int], count: int) -> dict[int, dict[str, int]]:
    """Marks keyed by :func:`shard_key`, per shard (``count`` shards, each present)."""
    out: dict[int, dict[str, int]] = {i: {} for i in range(count)}
    for key, m in marks.items():
        stream, _, shard = key.rpartition("#")
        if stream and shard.isdigit() and int(shard) in out:
            out[int(shard)][stream] = m
    return out


@dataclass
class ShardJob:
    """What a host of shards needs to start them (picklable: it goes to worker processes)."""

    config: Config
    shards: dict[int, dict[str, int] | None]  # shard -> its marks to resume from (or None)
    endpoints: dict[str, str]  # the run's local stand-ins (provisioned by the parent)
    journal: Path | None  # the run's journal folder: shard i's is journal/shard-i
    buffers: Path  # the run's buffer folder: shard i's is buffers/shard-i
    paused: bool = False
    log_level: str = "info"
    log_format: str = "json"


@dataclass
class Status:
    """How one shard is: what the parent shows and checkpoints."""

    phase: str = "provisioning"
    at: float = 0.0  # when it was taken (epoch s): a worker's status is up to 0.5 s old
    snapshot: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, tuple[int, int]] = field(default_factory=dict)
    # counters of exactly the events below the marks (taken with them), and live ones
    at_mark: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    live: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    metrics: Families = field(default_factory=list)


# -- one process's shards ------------------------------------------------------------------


class Host:
    """Shards as engines in this process's event loop (in the parent, or in a worker)."""

    def __init__(self, job: ShardJob) -> None:
        from datafactory.runtime.engine import Engine
        from datafactory.telemetry.metrics import Metrics

        self.job = job
        self.phases: dict[int, str] = {}
        count = job.config.run.shards
        self.engines: dict[int, Engine] = {}
        for i, marks in sorted(job.shards.items()):
            self.phases[i] = "provisioning"
            self.engines[i] = Engine(
                job.config,
                metrics=Metrics(),
                resume=marks,
                on_phase=self._phase_of(i),
                buffers=job.buffers / f"shard-{i}",
                journal=job.journal / f"shard-{i}" if job.journal is not None else None,
                shard=Shard(i, count),
                endpoints=job.endpoints,
            )
            if job.paused:
                self.engines[i].pause()

    def _phase_of(self, i: int) -> Callable[[str], None]:
        def set_phase(phase: str) -> None:
            self.phases[i] = phase

        return set_phase

    async def run(self) -> dict[int, dict[str, Any] | str]:
        """Every shard to its end: its summary, or what failed."""
        results = await asyncio.gather(
            *(e.run() for e in self.engines.values()), return_exceptions=True
        )
        out: dict[int, dict[str, Any] | str] = {}
        for i, r in zip(self.engines, results, strict=True):
            self.phases[i] = "done"
            if isinstance(r, BaseException):
                log.error("shard_failed", shard=i, error=str(r))
                out[i] = str(r) or repr(r)
            else:
                out[i] = r
        return out

    def status(self) -> dict[int, Status]:
        from datafactory.telemetry.metrics import families

        out = {}
        for i, e in self.engines.items():
            out[i] = Status(
                phase=self.phases[i],
                at=time.time(),
                snapshot=e.snapshot(),
                marks=e.marks(),
                at_mark=e.counters(at_mark=True),
                live=e.counters(),
                metrics=families(e.metrics.registry),
            )
        return out

    def command(self, op: str, arg: Any = None) -> Any:
        """stop / pause / resume / checkpointed: to every shard here."""
        for i, e in self.engines.items():
            if op == "stop":
                e.stop(suspend=bool(arg))
            elif op == "pause":
                e.pause()
            elif op == "resume":
                e.resume()
            elif op == "checkpointed":
                e.checkpointed(arg.get(i, {}))
            else:
                raise ValueError(f"unknown shard command {op!r}")

    async def reload(self, new: Config) -> dict[str, Any]:
        results = [await e.reload(new) for e in self.engines.values()]
        return _one_result(results)


def _one_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What several shards did with one reload: the same, or what needs a restart anywhere."""
    restart = sorted({x for r in results for x in r["needs_restart"]})
    if restart:
        return {"applied": [], "needs_restart": restart}
    applied = list(dict.fromkeys(x for r in results for x in r["applied"]))
    return {"applied": applied, "needs_restart": []}


# -- a worker process's shards, seen from the parent ------------------------------------


class Worker:
    """A worker process hosting some shards; its statuses as it last sent them."""

    def __init__(self, job: ShardJob, on_status: Callable[[], None]) -> None:
        self.job = job
        self.statuses: dict[int, Status] = {i: Status() for i in job.shards}
        self.results: dict[int, dict[str, Any] | str] | None = None
        self._on_status = on_status
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._token = 0
        self._done: asyncio.Future[dict[int, dict[str, Any] | str]] | None = None

    def start(self) -> None:
        from datafactory.runtime import worker

        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        ctx = multiprocessing.get_context("spawn")  # no forked event loop, no copied threads
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker.main, args=(child, self.job), name=f"shards-{min(self.job.shards)}"
        )
        self.process.start()
        child.close()
        threading.Thread(target=self._read, args=(loop,), daemon=True).start()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        """The worker's messages, handed to the loop (in a thread: ``recv`` blocks)."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                break
            loop.call_soon_threadsafe(self._on_message, msg)
        loop.call_soon_threadsafe(self._ended)

    def _on_message(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "status":
            self.statuses.update(msg[1])
            self._on_status()
        elif kind == "reply":
            fut = self._replies.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif kind == "done":
            self.results = msg[1]

    def _ended(self) -> None:
        """The pipe closed: the worker is gone (its results sent, or it died)."""
        self.process.join(timeout=5)
        results = self.results
        if results is None:
            code = self.process.exitcode
            results = {
                i: f"worker process exited ({code}) before its shard ended" for i in self.job.shards
            }
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(RuntimeError("worker process ended"))
        if self._done is not None and not self._done.done():
            self._done.set_result(results)

    def send(self, op: str, arg: Any = None) -> None:
        with contextlib.suppress(OSError, ValueError):  # a worker that ended has no pipe
            self.conn.send(("command", op, arg))

    async def reload(self, new: Config) -> dict[str, Any]:
        self._token += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[self._token] = fut
        self.conn.send(("reload", self._token, new))
        result: dict[str, Any] = await fut
        return result

    async def wait(self) -> dict[int, dict[str, Any] | str]:
        assert self._done is not None
        return await self._done

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()


# -- the run as a whole ---------------------------------------------------------------------


class _RegistryView:
    """What the telemetry server and the daemon read of an engine's metrics: a registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry


class Shards:
    """A set of a run's shards as one engine: see the module's docstring."""

    def __init__(
        self,
        config: Config,
        shards: dict[int, dict[str, int] | None] | None = None,
        *,
        workers: int = 1,
        journal: Path | None = None,
        buffers: Path | None = None,
        on_phase: Callable[[str], None] | None = None,
    ) -> None:
        """``shards``: which shards to run, each with its marks to resume from (default:
        all of the run's, fresh); ``workers``: processes to spread them over (1: this one)."""
        from datafactory.lifecycle.registry import state_dir
        from datafactory.runtime.spill import safe_name

        self.config = config
        count = config.run.shards
        self.shards = shards if shards is not None else {i: None for i in range(count)}
        self.workers = max(1, min(workers, len(self.shards)))
        self.journal = journal
        self.buffers = buffers or state_dir() / "buffers" / safe_name(config.run.name)
        self.on_phase = on_phase
        self._phase = ""
        self._stop = asyncio.Event()
        self._suspend = False
        self._paused = False
        self._host: Host | None = None
        self._workers: list[Worker] = []
        registry = CollectorRegistry()
        registry.register(Labelled(self._metric_sources))
        self.metrics = _RegistryView(registry)

    # -- views ---------------------------------------------------------------------------

    def statuses(self) -> dict[int, Status]:
        if self._host is not None:
            return self._host.status()
        out: dict[int, Status] = {}
        for w in self._workers:
            out.update(w.statuses)
        return out

    def _metric_sources(self) -> Iterator[tuple[dict[str, str], Families]]:
        for i, st in sorted(self.statuses().items()):
            yield {"shard": str(i)}, st.metrics

    def snapshot(self) -> dict[str, Any]:
        """The run as a whole (streams and sinks summed over shards), and per shard."""
        st = self.statuses()
        merged: dict[str, Any] = {}
        for s in st.values():
            merged = merge(merged, s.snapshot)
        merged["shards"] = {
            str(i): {"phase": s.phase, "at": s.at, "streams": s.snapshot.get("streams", {})}
            for i, s in sorted(st.items())
        }
        return merged

    def marks(self) -> dict[str, tuple[int, int]]:
        return {
            shard_key(stream, i): m
            for i, s in self.statuses().items()
            for stream, m in s.marks.items()
        }

    def counters(self, at_mark: bool = False) -> dict[tuple[str, str], dict[str, int]]:
        return {
            (shard_key(stream, i), sink): v
            for i, s in self.statuses().items()
            for (stream, sink), v in (s.at_mark if at_mark else s.live).items()
        }

    # -- commands --------------------------------------------------------------------------

    def _command(self, op: str, arg: Any = None) -> None:
        if self._host is not None:
            self._host.command(op, arg)
        for w in self._workers:
            w.send(op, arg)

    def stop(self, suspend: bool = False) -> None:
        self._suspend = suspend
        self._stop.set()
        self._command("stop", suspend)

    def pause(self) -> None:
        self._paused = True
        self._command("pause")

    def resume(self) -> None:
        self._paused = False
        self._command("resume")

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def checkpointed(self, marks: dict[str, int]) -> None:
        self._command("checkpointed", per_shard(marks, self.config.run.shards))

    async def reload(self, new: Config) -> dict[str, Any]:
        """Every shard applies the change (rates are split by each shard's share there)."""
        from datafactory.runtime.diff import diff

        d = diff(self.config, new)
        if d.restart:
            return {"applied": [], "needs_restart": list(d.restart)}
        results = []
        if self._host is not None:
            results.append(await self._host.reload(new))
        for w in self._workers:
            results.append(await w.reload(new))
        result = _one_result(results)
        if not result["needs_restart"]:
            self.config = new
        return result

    def forget(self) -> None:
        """The run is over: its journals go."""
        if self.journal is not None:
            shutil.rmtree(self.journal, ignore_errors=True)

    # -- run -------------------------------------------------------------------------------

    def _phases(self) -> None:
        """The run's phase follows its shards': running once all run, draining once all
        drain."""
        phases = [s.phase for s in self.statuses().values()]
        if not phases or self.on_phase is None:
            return
        lowest = min(PHASES.index(p) for p in phases if p in PHASES)
        for p in ("running", "draining"):
            if lowest >= PHASES.index(p) and PHASES.index(
                self._phase or "provisioning"
            ) < PHASES.index(p):
                self._phase = p
                self.on_phase(p)

    async def run(self) -> dict[str, Any]:
        config = self.config
        ctx = SinkContext(config.run.name, config.run.seed)
        types = registered_sinks()
        sinks = {n: types[c.type](n, c, ctx) for n, c in config.sinks.items()}
        manifest = config.manifest_sink
        msink = types[manifest.type]("manifest", manifest, ctx) if manifest is not None else None
        lifecycle = Lifecycle.of(config, sinks, msink)
        await lifecycle.start()
        try:
            results = await self._run_shards(dict(lifecycle.endpoints))
        finally:
            await lifecycle.stop()
        failed = {i: r for i, r in results.items() if isinstance(r, str)}
        if failed:
            raise RuntimeError("; ".join(f"shard {i}: {e}" for i, e in sorted(failed.items())))
        summaries = [r for r in results.values() if isinstance(r, dict)]
        out: dict[str, Any] = {}
        for s in summaries:
            out = merge(out, s)
        out["shards"] = {str(i): r for i, r in sorted(results.items())}
        return out

    async def _run_shards(self, endpoints: dict[str, str]) -> dict[int, dict[str, Any] | str]:
        from datafactory.logs import current_settings

        level, fmt = current_settings()
        groups: list[dict[int, dict[str, int] | None]] = [{} for _ in range(self.workers)]
        for k, (i, marks) in enumerate(sorted(self.shards.items())):
            groups[k % self.workers][i] = marks

        def job(shards: dict[int, dict[str, int] | None]) -> ShardJob:
            return ShardJob(
                self.config, shards, endpoints, self.journal, self.buffers, self._paused, level, fmt
            )

        if self.workers == 1:
            self._host = Host(job(groups[0]))
            if self.stopping:
                self._host.command("stop", self._suspend)
            ticker = asyncio.create_task(self._tick())
            try:
                return await self._host.run()
            finally:
                ticker.cancel()
                self._phases()
        self._workers = [Worker(job(g), self._phases) for g in groups]
        for w in self._workers:
            w.start()
        try:
            if self.stopping:
                self._command("stop", self._suspend)
            results: dict[int, dict[str, Any] | str] = {}
            for r in await asyncio.gather(*(w.wait() for w in self._workers)):
                results.update(r)
            return results
        finally:
            for w in self._workers:
                w.kill()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self._phases()


_SUMMED_MAX = {"lag_seconds", "oldest_seconds", "streaming_seconds"}


def merge(a: Any, b: Any, key: str = "") -> Any:
    """Two shards' snapshots or summaries as one: counts summed, flags all, lists joined."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v, k) if k in a else v
        return out
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) and bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return max(a, b) if key in _SUMMED_MAX else a + b
    if isinstance(a, list) and isinstance(b, list):
        return sorted(set(a) | set(b)) if all(isinstance(x, str) for x in a + b) else a + b
    return a
