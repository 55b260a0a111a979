"""One process's shards: each an :class:`~datafactory.runtime.engine.Engine` in this event loop
(the parent's, or a worker process's: see :mod:`.shards` and :mod:`.worker`), and what they
report of themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from datafactory.config import Config
from datafactory.pack import Shard
from datafactory.telemetry.metrics import Families

log = structlog.get_logger("datafactory.shards")

STATUS_INTERVAL = 0.5  # how often a worker process tells its parent how its shards are
PHASES = ("provisioning", "running", "draining", "done")


@dataclass
class ShardJob:
    """What a host of shards needs to start them (picklable: it goes to worker processes)."""

    config: Config
    shards: dict[int, dict[str, int] | None]  # shard -> its marks to resume from (or None)
    endpoints: dict[str, str]  # the run's local stand-ins (provisioned by the parent)
    journal: Path | None  # the run's journal folder: shard i's is journal/shard-i
    buffers: Path  # the run's buffer folder: shard i's is buffers/shard-i
    origin: float  # when the run began (epoch s): every shard's streams start then
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
                origin=job.origin,
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
        return one_result(results)


def one_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What several shards did with one reload: the same, or what needs a restart anywhere."""
    restart = sorted({x for r in results for x in r["needs_restart"]})
    if restart:
        return {"applied": [], "needs_restart": restart}
    applied = list(dict.fromkeys(x for r in results for x in r["applied"]))
    return {"applied": applied, "needs_restart": []}
