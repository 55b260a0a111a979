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
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from datafactory.config import Config
from datafactory.lifecycle.manager import Lifecycle
from datafactory.pack import registered_sinks
from datafactory.runtime.host import PHASES, STATUS_INTERVAL, Host, ShardJob, Status, one_result
from datafactory.sinks.base import SinkContext
from datafactory.telemetry.metrics import Families, Labelled

log = structlog.get_logger("datafactory.shards")


def shard_key(stream: str, shard: int) -> str:
    """A shard's stream in the ledger's marks and counters."""
    return f"{stream}#{shard}"


def split_key(key: str) -> tuple[str, int] | None:
    """(stream, shard) of a :func:`shard_key`; None for any other key."""
    stream, _, shard = key.rpartition("#")
    return (stream, int(shard)) if stream and shard.isdigit() else None


def per_shard(marks: dict[str, int], count: int) -> dict[int, dict[str, int]]:
    """Marks keyed by :func:`shard_key`, per shard (``count`` shards, each present)."""
    out: dict[int, dict[str, int]] = {i: {} for i in range(count)}
    for key, m in marks.items():
        split = split_key(key)
        if split is not None and split[1] in out:
            out[split[1]][split[0]] = m
    return out


@contextlib.asynccontextmanager
async def provisioned(config: Config) -> AsyncIterator[dict[str, str]]:
    """The run's sinks provisioned (topics, buckets; local stand-ins started), for shards'
    engines that only write: the stand-ins' addresses."""
    ctx = SinkContext(config.run.name, config.run.seed)
    types = registered_sinks()
    sinks = {n: types[c.type](n, c, ctx) for n, c in config.sinks.items()}
    manifest = config.manifest_sink
    msink = types[manifest.type]("manifest", manifest, ctx) if manifest is not None else None
    lifecycle = Lifecycle.of(config, sinks, msink)
    await lifecycle.start()
    try:
        yield dict(lifecycle.endpoints)
    finally:
        await lifecycle.stop()


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
        self._phase = 0  # the run's phase, as an index of PHASES
        self._stop = asyncio.Event()
        self._suspend = False
        self._paused = False
        self._host: Host | None = None
        self._workers: list[Any] = []  # worker.Worker: the processes running the shards
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
        result = one_result(results)
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
        phases = [PHASES.index(s.phase) for s in self.statuses().values()]
        if not phases or self.on_phase is None:
            return
        for p in ("running", "draining"):
            if min(phases) >= PHASES.index(p) > self._phase:
                self._phase = PHASES.index(p)
                self.on_phase(p)

    async def run(self) -> dict[str, Any]:
        async with provisioned(self.config) as endpoints:
            results = await self._run_shards(endpoints)
        failed = {i: r for i, r in results.items() if isinstance(r, str)}
        if failed:
            raise RuntimeError("; ".join(f"shard {i}: {e}" for i, e in sorted(failed.items())))
        summaries = [r for r in results.values() if isinstance(r, dict)]
        out: dict[str, Any] = {}
        for s in summaries:
            out = merge(out, s)
        out["shards"] = {str(i): r for i, r in sorted(results.items())}
        return out

    def _origin(self) -> float:
        """When the run began: one start for all its shards (a worker that starts later
        catches up), kept beside the journals, so that shards going on after a restart (one
        killed before it journaled its start too) keep the run's first start."""
        path = self.journal / "origin" if self.journal is not None else None
        if path is not None and any(m is not None for m in self.shards.values()):
            try:
                return float(path.read_text())
            except (OSError, ValueError):
                pass  # a run from before origins were kept, or one that never started
        now = time.time()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(repr(now))
        return now

    async def _run_shards(self, endpoints: dict[str, str]) -> dict[int, dict[str, Any] | str]:
        from datafactory.logs import current_settings

        level, fmt = current_settings()
        groups: list[dict[int, dict[str, int] | None]] = [{} for _ in range(self.workers)]
        for k, (i, marks) in enumerate(sorted(self.shards.items())):
            groups[k % self.workers][i] = marks

        origin = self._origin()

        def job(shards: dict[int, dict[str, int] | None]) -> ShardJob:
            return ShardJob(
                self.config,
                shards,
                endpoints,
                self.journal,
                self.buffers,
                origin,
                self._paused,
                level,
                fmt,
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
        from datafactory.runtime.worker import Worker

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
