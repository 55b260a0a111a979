"""The lifecycle manager: what a run needs before its first event and after its last.

On start it launches the local stand-ins that ``provider: local`` sinks ask for (one Tansu
for all Kafka sinks, one moto server for all AWS sinks), points those sinks at them and lets
every sink provision its topics / streams / buckets. On stop it lets sinks tear down what
they created when marked ``ephemeral``, then stops the stand-ins.
"""

from __future__ import annotations

import structlog

from datafactory.lifecycle.local import Moto, StandIn, Tansu
from datafactory.sinks.base import Sink

log = structlog.get_logger("datafactory.lifecycle")


class Lifecycle:
    def __init__(self, sinks: dict[str, Sink], streams: dict[str, list[str]]) -> None:
        self.sinks = sinks
        self.streams = streams  # sink name -> event types it receives
        self.stand_ins: dict[str, StandIn] = {}

    async def start(self) -> None:
        try:
            for sink in self.sinks.values():
                service = sink.local_service()
                if service is None:
                    continue
                stand_in = self.stand_ins.get(service)
                if stand_in is None:
                    stand_in = Tansu() if service == "kafka" else Moto()
                    await stand_in.astart()
                    self.stand_ins[service] = stand_in
                address = (
                    stand_in.bootstrap
                    if isinstance(stand_in, Tansu)
                    else (stand_in.endpoint if isinstance(stand_in, Moto) else "")
                )
                sink.use_local(address)
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
