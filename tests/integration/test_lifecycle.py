"""Time-to-live of provisioned resources: a crashed run's leftovers are reaped once expired."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.lifecycle.local import Moto, Tansu
from datafactory.lifecycle.registry import ResourceRegistry, reap
from datafactory.runtime.engine import Engine

pytestmark = pytest.mark.integration


def config(tansu: Tansu, moto: Moto, ttl: str, tag: str) -> Any:
    return parse_config(f"""
run: {{name: ttl{tag}, seed: 1}}
packs: {{retail: {{streams: {{pos_transaction: {{rate: {{profile: constant, base: 5000}},
                                               max_events: 300}}}}}}}}
sinks:
  k: {{type: kafka, bootstrap: "{tansu.bootstrap}", topic: "ttl.{tag}", ttl: {ttl}}}
  kin: {{type: aws_kinesis, endpoint_url: "{moto.endpoint}", stream: "ttl-{tag}", ttl: {ttl},
         max_in_flight: 1}}
  s3: {{type: aws_s3, endpoint_url: "{moto.endpoint}", bucket: "ttl-{tag}", ttl: {ttl}}}
telemetry: {{enabled: false}}
""")


async def exists(tansu: Tansu, moto: Moto, tag: str) -> dict[str, bool]:
    import aiobotocore.session
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    kw = {
        "endpoint_url": moto.endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "x",
        "aws_secret_access_key": "x",
    }
    session = aiobotocore.session.get_session()
    async with session.create_client("kinesis", **kw) as k, session.create_client("s3", **kw) as s:
        try:  # by name: moto's ListStreams pages do not follow NextToken
            await k.describe_stream_summary(StreamName=f"ttl-{tag}")
            streams = {f"ttl-{tag}"}
        except k.exceptions.ResourceNotFoundException:
            streams = set()
        buckets = {b["Name"] for b in (await s.list_buckets())["Buckets"]}
    return {
        "kafka": f"ttl.{tag}" in topics,
        "kinesis": f"ttl-{tag}" in streams,
        "s3": f"ttl-{tag}" in buckets,
    }


async def test_expired_leftovers_are_reaped_and_fresh_ones_kept(
    tansu: Tansu, moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFACTORY_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    # two runs that are not ephemeral (as if they had crashed before teardown)
    await Engine(config(tansu, moto, "10m", "old")).run()
    await Engine(config(tansu, moto, "2h", "new")).run()
    assert await exists(tansu, moto, "old") == {"kafka": True, "kinesis": True, "s3": True}
    registry = ResourceRegistry(tmp_path / "resources.json")
    assert len(registry.entries()) == 6
    # nothing has expired yet: the command line reaps nothing
    r = subprocess.run(
        [sys.executable, "-m", "datafactory", "reap"],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        env={"DATAFACTORY_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0 and b"0 deleted, 6 still recorded" in r.stdout, r.stderr
    # fifteen minutes later the first run's leftovers have expired, the second's have not
    deleted = await reap(registry, now=time.time() + 15 * 60)
    assert sorted(deleted) == ["aws_kinesis:ttl-old", "aws_s3:ttl-old", "kafka:ttl.old"]
    assert await exists(tansu, moto, "old") == {"kafka": False, "kinesis": False, "s3": False}
    assert await exists(tansu, moto, "new") == {"kafka": True, "kinesis": True, "s3": True}
    assert {e["name"] for e in registry.entries()} == {"ttl.new", "ttl-new"}


async def test_a_run_reaps_expired_leftovers_when_it_starts(
    tansu: Tansu, moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFACTORY_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    await Engine(config(tansu, moto, "1h", "crashed")).run()
    path = tmp_path / "resources.json"
    entries = orjson.loads(path.read_bytes())
    for e in entries:  # as if the hour had passed
        e["expires"] = time.time() - 1
    path.write_bytes(orjson.dumps(entries))
    await Engine(config(tansu, moto, "1h", "next")).run()
    assert await exists(tansu, moto, "crashed") == {"kafka": False, "kinesis": False, "s3": False}
    assert await exists(tansu, moto, "next") == {"kafka": True, "kinesis": True, "s3": True}
    assert {e["name"] for e in ResourceRegistry(path).entries()} == {"ttl.next", "ttl-next"}
