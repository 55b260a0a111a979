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
from pathlib import Path

import orjson
import structlog

from datafactory.lifecycle.local import Moto, StandIn, Tansu
from datafactory.sinks.base import Sink

log = structlog.get_logger("datafactory.lifecycle")

PREFERRED_PORTS = {"kafka": 19092, "aws": 14566}


def endpoints_file() -> Path:
    return Path(os.environ.get("DATAFACTORY_STATE_DIR", ".datafactory")) / "local.json"


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


def _address(stand_in: StandIn) -> str:
    if isinstance(stand_in, Tansu):
        return stand_in.bootstrap
    assert isinstance(stand_in, Moto)
    return stand_in.endpoint


class Lifecycle:
    def __init__(self, sinks: dict[str, Sink], streams: dict[str, list[str]]) -> None:
        self.sinks = sinks
        self.streams = streams  # sink name -> event types it receives
        self.stand_ins: dict[str, StandIn] = {}
        self.endpoints: dict[str, str] = {}

    async def start(self) -> None:
        try:
            for sink in self.sinks.values():
                service = sink.local_service()
                if service is None:
                    continue
                stand_in = self.stand_ins.get(service)
                if stand_in is None:
                    port = _port_if_free(PREFERRED_PORTS[service])
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
            for name, sink in self.sinks.items():
                await sink.provision(self.streams.get(name, []))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for name, sink in self.sinks.items():
            try:
                await sink.teardown()
            except Exception as e:  # teardown must not hide the run's outcome
                log.error("teardown_failed", sink=name, error=repr(e))
        for stand_in in self.stand_ins.values():
            await stand_in.astop()
        self.stand_ins.clear()
        if self.endpoints:
            with contextlib.suppress(OSError):
                endpoints_file().unlink()
            self.endpoints = {}
