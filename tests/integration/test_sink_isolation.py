"""Sinks that do not hold each other back, against real services: Kafka (Tansu) keeps the
stream's pace while a Kinesis (moto) that cannot keep up sheds what its drop_newest buffer
cannot take, and ``verify`` reads both back: nothing missing, the shed events named as shed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from datafactory.config import parse_config
from datafactory.lifecycle.local import Moto, Tansu
from datafactory.runtime.engine import Engine
from datafactory.verify import verify

pytestmark = [pytest.mark.integration, pytest.mark.timed]
STREAM = "retail.pos_transaction"

CONFIG = """
run: {{name: iso{uid}, seed: 4, duration: 4s}}
packs:
  retail:
    params: {{stores: 5, skus: 300, customers: 1000}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 8000}}}}
sinks:
  bus: {{type: kafka, bootstrap: "{bootstrap}", format: json, topic: "iso-{uid}", partitions: 2}}
  kin: {{type: aws_kinesis, endpoint_url: "{endpoint}", stream: "iso-{uid}", shards: 1,
         max_in_flight: 1, buffer: {{max_events: 1000, when_full: drop_newest}}}}
manifest: {{sink: {{type: file, path: "{manifest}"}}, flush: 200ms}}
engine: {{batch_max: 500}}
telemetry: {{enabled: false}}
"""


async def test_a_lagging_kinesis_sheds_while_kafka_keeps_pace_and_verify_says_which(
    tansu: Tansu, moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    uid = uuid.uuid4().hex[:8]
    text = CONFIG.format(
        uid=uid, bootstrap=tansu.bootstrap, endpoint=moto.endpoint, manifest=tmp_path / "m"
    )
    cfg = parse_config(text)
    summary = await Engine(cfg).run()
    released = summary["streams"][STREAM]["released"]
    assert released == 32_000  # the stream kept its pace: 4 s at 8,000 events/s
    bus, kin = summary["sinks"]["bus"], summary["sinks"]["kin"]
    assert bus["sent"][STREAM] == released and bus["shed"][STREAM] == 0
    shed = kin["shed"][STREAM]
    assert shed > 0 and kin["sent"][STREAM] + shed == released
    report = await verify(cfg, quiet=2.0)
    assert report["failures"] == []
    k = report["sinks"]["kin"][STREAM]
    assert k["missing"] == 0 and k["shed"] == shed
    assert k["delivered"] == released - shed
    b = report["sinks"]["bus"][STREAM]
    assert b["missing"] == 0 and b["shed"] == 0 and b["delivered"] == released
