"""What runs created that should not outlive a time-to-live, and the reaper that deletes it.

A sink with ``ttl`` records each resource it provisioned (topic, stream, bucket) with the
address it reached it at and an expiry time, in ``<state dir>/resources.json``. A normal
ephemeral teardown removes the record with the resource; a crash leaves it, and the next run's
start (or ``datafactory reap``) deletes whatever has expired. Kafka has no resource tags, so the
record is the only memory of a topic; Kinesis streams and S3 buckets are also tagged.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("datafactory.lifecycle")


def state_dir() -> Path:
    return Path(os.environ.get("DATAFACTORY_STATE_DIR", ".datafactory"))


class ResourceRegistry:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "resources.json"

    def entries(self) -> list[dict[str, Any]]:
        try:
            data: list[dict[str, Any]] = orjson.loads(self.path.read_bytes())
            return data
        except (OSError, ValueError):
            return []

    def _save(self, entries: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".resources-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)

    def add(self, new: list[dict[str, Any]]) -> None:
        keys = {(e["type"], e["name"], e["address"]) for e in new}
        kept = [e for e in self.entries() if (e["type"], e["name"], e["address"]) not in keys]
        self._save(kept + new)

    def remove(self, type_: str, address: str, names: list[str]) -> None:
        entries = self.entries()
        kept = [
            e
            for e in entries
            if not (e["type"] == type_ and e["address"] == address and e["name"] in names)
        ]
        if len(kept) != len(entries):
            self._save(kept)


async def reap(registry: ResourceRegistry | None = None, now: float | None = None) -> list[str]:
    """Delete every expired resource; returns ``type:name`` of those deleted. Resources whose
    service cannot be reached stay recorded for the next try."""
    from datafactory.pack import registered_sinks
    from datafactory.sinks.base import SinkContext

    registry = registry or ResourceRegistry()
    now = time.time() if now is None else now
    sinks = registered_sinks()
    deleted: list[str] = []
    for e in [e for e in registry.entries() if e["expires"] <= now]:
        cls = sinks.get(e["type"])
        if cls is None:
            continue
        sink = cls("reaper", cls.Config.model_validate(e["config"]), SinkContext(e["run"], 0))
        try:
            await sink.delete_resources([e["name"]])
        except Exception as err:
            log.warning("reap_failed", type=e["type"], name=e["name"], error=repr(err))
            continue
        finally:
            await sink.release()
        registry.remove(e["type"], e["address"], [e["name"]])
        deleted.append(f"{e['type']}:{e['name']}")
        log.info("reaped", type=e["type"], name=e["name"], run=e["run"])
    return deleted
