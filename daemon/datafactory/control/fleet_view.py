"""A run spread over the fleet, as the run manager of one daemon sees it: the surface of an
engine over the shards this daemon runs now (:mod:`.fleet`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from datafactory.config import Config
from datafactory.runtime.host import one_result
from datafactory.runtime.shards import _RegistryView, merge, shard_key
from datafactory.telemetry.metrics import Families, Labelled, families

if TYPE_CHECKING:
    from datafactory.control.fleet import Fleet, Part


class FleetView:
    """A fleet run as the run manager sees it on this daemon: the engine surface over the
    shards this daemon holds now (commands to the run as a whole go through the ledger)."""

    def __init__(self, fleet: Fleet, run_id: str) -> None:
        self.fleet = fleet
        self.run_id = run_id
        self._paused = False
        self._stopping = False
        registry = CollectorRegistry()
        registry.register(Labelled(self._sources))
        self.metrics = _RegistryView(registry)

    def _parts(self) -> dict[int, Part]:
        fr = self.fleet.runs.get(self.run_id)
        return dict(fr.parts) if fr is not None else {}

    def _sources(self) -> Iterator[tuple[dict[str, str], Families]]:
        for i, p in sorted(self._parts().items()):
            yield {"shard": str(i)}, families(p.engine.metrics.registry)

    def snapshot(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        parts = self._parts()
        for p in parts.values():
            merged = merge(merged, p.engine.snapshot())
        merged["shards"] = {
            str(i): {
                "daemon": self.fleet.owner,
                "at": time.time(),  # (a local shard's status is taken now, a worker's earlier)
                "streams": p.engine.snapshot().get("streams", {}),
            }
            for i, p in sorted(parts.items())
        }
        return merged

    def marks(self) -> dict[str, tuple[int, int]]:
        return {
            shard_key(s, i): m
            for i, p in self._parts().items()
            for s, m in p.engine.marks().items()
        }

    def counters(self, at_mark: bool = False) -> dict[tuple[str, str], dict[str, int]]:
        return {
            (shard_key(s, i), k): v
            for i, p in self._parts().items()
            for (s, k), v in p.engine.counters(at_mark).items()
        }

    def stop(self, suspend: bool = False) -> None:
        self._stopping = True
        for p in self._parts().values():
            p.engine.stop(suspend)

    def pause(self) -> None:
        self._paused = True
        for p in self._parts().values():
            p.engine.pause()

    def resume(self) -> None:
        self._paused = False
        for p in self._parts().values():
            p.engine.resume()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def reload(self, new: Config) -> dict[str, Any]:
        results = [await p.engine.reload(new) for p in self._parts().values()]
        if not results:  # nothing here: the daemons that run it apply it from the ledger
            from datafactory.runtime.diff import diff

            fr = self.fleet.runs.get(self.run_id)
            d = diff(fr.config if fr is not None else new, new)
            return {"applied": [] if d.restart else d.described(), "needs_restart": [*d.restart]}
        return one_result(results)

    def checkpointed(self, marks: dict[str, int]) -> None:
        """The fleet checkpoints its shards itself (fenced by their leases)."""

    def forget(self) -> None:
        """The fleet purges the run's journals when the run ends."""
