"""The mqtt sink against the real Mosquitto server of the machine (127.0.0.1:1883, or
$DATAFACTORY_MQTT as host:port): IoT telemetry under templated topics, QoS 1."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.lifecycle.manager import ProvisionError
from datafactory.runtime.engine import Engine

pytestmark = pytest.mark.integration

HOST, _, PORT = os.environ.get("DATAFACTORY_MQTT", "127.0.0.1:1883").partition(":")


@pytest.fixture(scope="module")
def broker() -> tuple[str, int]:
    port = int(PORT or 1883)
    try:
        socket.create_connection((HOST, port), timeout=3).close()
    except OSError as e:  # the machine's Mosquitto is part of the test bed: fail, never skip
        pytest.fail(f"no MQTT broker at {HOST}:{port} ({e}): start mosquitto")
    return HOST, port


def config(out: Path, prefix: str, topic: str, port: int) -> str:
    return orjson.dumps(
        {
            "run": {
                "name": "mqtt",
                "seed": 4,
                "clock": "simulated",
                "start": "2026-03-02T00:00:00Z",
                "duration": "20m",
            },
            "packs": {
                "iot": {
                    "params": {"devices": 30, "sites": 3},
                    "streams": {"telemetry": {}, "heartbeat": {}},
                }
            },
            "sinks": {
                "broker": {
                    "type": "mqtt",
                    "host": HOST,
                    "port": port,
                    "qos": 1,
                    "topic": f"{prefix}/{topic}",
                },
                "files": {"type": "file", "path": str(out)},
            },
            "telemetry": {"enabled": False},
            # Mosquitto queues at most 1000 QoS 1 messages for a subscriber that lags (its
            # max_queued_messages), then drops: keep bursts below that
            "engine": {"batch_max": 500},
        }
    ).decode()


class Subscriber(threading.Thread):
    """A subscriber on its own thread and event loop, so it reads as fast as the broker
    sends however busy the run's loop is (Mosquitto queues at most 1000 QoS 1 messages for a
    client that lags, then drops them)."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.topic = host, port, topic
        self.got: list[tuple[str, Any]] = []
        self.ready, self.stop = threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by the test, not lost in the thread
            self.error = e
            self.ready.set()

    async def _main(self) -> None:
        import aiomqtt

        ident = f"{self.topic.split('/')[0]}-sub"
        async with aiomqtt.Client(self.host, self.port, identifier=ident) as sub:
            await sub.subscribe(self.topic, qos=1)
            self.ready.set()

            async def read() -> None:
                async for msg in sub.messages:
                    payload = orjson.loads(bytes(msg.payload))
                    self.got.append((str(msg.topic), payload))

            reader = asyncio.create_task(read())
            await asyncio.to_thread(self.stop.wait)
            reader.cancel()


async def test_telemetry_arrives_under_templated_topics(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = broker
    prefix = f"dftest-{uuid.uuid4().hex[:8]}"
    sub = Subscriber(host, port, f"{prefix}/#")
    sub.start()
    try:
        assert sub.ready.wait(30) and sub.error is None, sub.error
        cfg = parse_config(
            config(tmp_path, prefix, "site/{site_id}/device/{device_id}/{stream}", port)
        )
        summary = await Engine(cfg).run()
        expected = sum(
            summary["streams"][s]["released"] for s in ("iot.telemetry", "iot.heartbeat")
        )
        assert expected > 1000
        deadline = time.monotonic() + 60
        while len(sub.got) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # (and nothing more than the run's events comes)
    finally:
        sub.stop.set()
        sub.join(10)
    assert sub.error is None, sub.error
    got = list(sub.got)
    # every message is on its record's topic
    for topic, rec in got:
        stream = "telemetry" if "metric" in rec else "heartbeat"
        assert topic == f"{prefix}/site/{rec['site_id']}/device/{rec['device_id']}/{stream}"
    # and the broker got exactly what the file sink wrote, once each
    written = [
        orjson.loads(x)["event_id"]
        for f in sorted(tmp_path.rglob("*.jsonl"))
        for x in f.read_bytes().splitlines()
    ]
    assert sorted(r["event_id"] for _, r in got) == sorted(written)
    assert len({t for t, _ in got}) > 30  # one topic per device and stream


async def test_a_topic_naming_a_missing_field_fails_before_the_first_event(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    cfg = parse_config(config(tmp_path, "dftest-bad", "site/{site}/{stream}", broker[1]))
    with pytest.raises(ProvisionError) as e:
        await Engine(cfg).run()
    msg = str(e.value)
    assert "sink 'broker'" in msg and "site is not a field of iot.telemetry" in msg
    assert "site_id" in msg  # the fields it could have used
    assert not list(tmp_path.rglob("*.jsonl"))
