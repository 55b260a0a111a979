"""The lifecycle manager: what a run needs before its first event and after its last.

On start it launches the local stand-ins that ``provider: local`` sinks ask for (one Tansu
for all Kafka sinks, one moto server for all AWS sinks), points those sinks at them and lets
every sink provision its topics / streams / buckets. On stop it lets sinks tear down what
they created when marked ``ephemeral``, then stops the stand-ins.

Stand-ins prefer fixed loopback ports (Kafka 19092, AWS 14566) so that ``datafactory tail``
and a user's own tools find them; a taken port falls back to a free one, and the endpoints
in use are written to ``.datafactory/local.json`` while the run lasts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import orjson
import structlog

from datafactory.chaos.manifest import STREAM as MANIFEST_STREAM
from datafactory.config import Config
from datafactory.lifecycle.local import Moto, StandIn, Tansu
from datafactory.lifecycle.registry import ResourceRegistry, reap, state_dir
from datafactory.sinks.base import Sink

log = structlog.get_logger("datafactory.lifecycle")

PREFERRED_PORTS = {"kafka": 19092, "aws": 14566}


def endpoints_file() -> Path:
    return state_dir() / "local.json"


def read_local_endpoints() -> dict[str, str]:
    """What a running run with local stand-ins wrote: {"kafka": "127.0.0.1:19092", ...}."""
    try:
        data: dict[str, str] = orjson.loads(endpoints_file().read_bytes())
        return data
    except (OSError, ValueError):
        return {}


def _port_if_free(port: int) -> int | None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port


def _claim(port: int) -> tuple[int | None, int | None]:
    """The preferred ``port`` for a stand-in of this run, or None (a free one then), and the
    lock that holds it. A free port is not enough: two runs starting at once both find it
    free, and the second's stand-in fails to bind while the first's answers on it. So the
    port is taken under an exclusive lock on a file in the temp directory (``flock``: freed
    when the run stops, or by the kernel when the process dies)."""
    import fcntl
    import tempfile

    path = Path(tempfile.gettempdir()) / f"datafactory-port-{port}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None, None
    if _port_if_free(port) is None:  # taken by something that does not use the lock
        os.close(fd)
        return None, None
    return port, fd


def _address(stand_in: StandIn) -> str:
    if isinstance(stand_in, Tansu):
        return stand_in.bootstrap
    assert isinstance(stand_in, Moto)
    return stand_in.endpoint


class ProvisionError(RuntimeError):
    """A sink could not create (or reach) its topics, streams or buckets."""


class Lifecycle:
    def __init__(self, sinks: dict[str, Sink], streams: dict[str, list[str]]) -> None:
        self.sinks = sinks
        self.streams = streams  # sink name -> event types it receives
        self.stand_ins: dict[str, StandIn] = {}
        self.endpoints: dict[str, str] = {}
        self.registry = ResourceRegistry()
        self._locks: list[int] = []  # the preferred ports' locks this run holds

    @classmethod
    def of(cls, config: Config, sinks: dict[str, Sink], manifest: Sink | None) -> Lifecycle:
        """The lifecycle of a run's sinks (``manifest``: its ground truth's sink)."""
        streams = {n: [p.event_type for p in config.streams if n in p.sinks] for n in sinks}
        if manifest is not None:
            sinks = {**sinks, "manifest": manifest}
            streams["manifest"] = [MANIFEST_STREAM]
        return cls(sinks, streams)

    async def start(self) -> None:
        try:
            for sink in self.sinks.values():
                service = sink.local_service()
                if service is None:
                    continue
                stand_in = self.stand_ins.get(service)
                if stand_in is None:
                    port, lock = _claim(PREFERRED_PORTS[service])
                    if lock is not None:
                        self._locks.append(lock)
                    stand_in = Tansu(port) if service == "kafka" else Moto(port)
                    await stand_in.astart()
                    self.stand_ins[service] = stand_in
                    self.endpoints[service] = _address(stand_in)
                sink.use_local(_address(stand_in))
            if self.endpoints:
                log.info("local_endpoints", **self.endpoints)
                with contextlib.suppress(OSError):
                    endpoints_file().parent.mkdir(parents=True, exist_ok=True)
                    endpoints_file().write_bytes(orjson.dumps(self.endpoints))
            if any(getattr(s.config, "ttl", None) for s in self.sinks.values()) or (
                self.registry.entries()
            ):
                try:
                    await reap(self.registry)  # what earlier (crashed) runs left past its TTL
                except Exception as e:
                    log.warning("reap_failed", error=repr(e))
            for name, sink in self.sinks.items():
                try:
                    await sink.provision(self.streams.get(name, []))
                except Exception as e:
                    raise ProvisionError(
                        f"sink {name!r} ({sink.config.type}): could not "
                        f"create what the run writes to: {e}"
                    ) from e
                self._record(sink)
        except BaseException:
            await self.stop()
            raise

    def _record(self, sink: Sink) -> None:
        ttl = getattr(sink.config, "ttl", None)
        if not ttl or not sink.created or sink.local_service() is not None:
            return  # (a local stand-in takes what it holds with it when it stops)
        cfg = sink.reconnect_config()
        address = str(cfg.get("bootstrap") or cfg.get("endpoint_url") or "")
        now = time.time()
        self.registry.add(
            [
                {
                    "type": sink.config.type,
                    "name": n,
                    "address": address,
                    "config": cfg,
                    "run": sink.ctx.run_name,
                    "created": now,
                    "expires": now + ttl,
                }
                for n in sink.created
            ]
        )

    async def stop(self) -> None:
        for name, sink in self.sinks.items():
            created = list(sink.created)
            try:
                await sink.teardown()
            except Exception as e:  # teardown must not hide the run's outcome
                log.error("teardown_failed", sink=name, error=repr(e))
                continue
            gone = [n for n in created if n not in sink.created]
            if gone and getattr(sink.config, "ttl", None):
                cfg = sink.reconnect_config()
                address = str(cfg.get("bootstrap") or cfg.get("endpoint_url") or "")
                self.registry.remove(sink.config.type, address, gone)
        for stand_in in self.stand_ins.values():
            await stand_in.astop()
        self.stand_ins.clear()
        for fd in self._locks:  # (the ports are free again: another run may take them)
            os.close(fd)
        self._locks = []
        if self.endpoints:
            with contextlib.suppress(OSError):
                endpoints_file().unlink()
            self.endpoints = {}
