"""The S3 sink in stream mode against a real S3 endpoint (moto): provisioning, keys, teardown."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.lifecycle.local import Moto
from datafactory.runtime.engine import Engine

pytestmark = pytest.mark.integration


def s3_client(moto: Moto) -> Any:
    import aiobotocore.session

    return aiobotocore.session.get_session().create_client(
        "s3",
        endpoint_url=moto.endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def config(moto: Moto, bucket: str, extra: str = "") -> Any:
    return parse_config(f"""
run: {{name: s3run, seed: 8, clock: simulated, start: 2026-02-03T10:00:00Z, duration: 2h}}
packs: {{retail: {{streams: {{pos_transaction: {{rate: {{profile: constant, base: 2}}}}}}}}}}
sinks:
  lake: {{type: aws_s3, endpoint_url: "{moto.endpoint}", bucket: {bucket}, prefix: events/,
          format: json{extra}}}
telemetry: {{enabled: false}}
""")


async def test_bucket_is_provisioned_tagged_and_objects_are_deterministic(
    moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    summary = await Engine(config(moto, "lake-a")).run()
    sent = summary["sinks"]["lake"]["sent"]["retail.pos_transaction"]
    assert sent == 2 * 7200
    async with s3_client(moto) as c:
        tags = await c.get_bucket_tagging(Bucket="lake-a")
        assert {"Key": "datafactory-run", "Value": "s3run"} in tags["TagSet"]
        objs = (await c.list_objects_v2(Bucket="lake-a"))["Contents"]
        keys = sorted(o["Key"] for o in objs)
        assert keys[0].startswith("events/retail/pos_transaction/dt=2026-02-03/hour=10/s3run-")
        assert any("/hour=11/" in k for k in keys)
        lines = []
        for k in keys:
            body = await (await c.get_object(Bucket="lake-a", Key=k))["Body"].read()
            lines += body.splitlines()
        assert len(lines) == sent
        assert orjson.loads(lines[0])["event_time"].startswith("2026-02-03T10:")
    # the same run again into another bucket: the same keys, the same bytes
    await Engine(config(moto, "lake-b")).run()
    async with s3_client(moto) as c:
        objs_b = (await c.list_objects_v2(Bucket="lake-b"))["Contents"]
        assert sorted(o["Key"] for o in objs_b) == keys
        assert {o["ETag"] for o in objs_b} == {o["ETag"] for o in objs}


async def test_ephemeral_bucket_is_emptied_and_deleted(
    moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    summary = await Engine(config(moto, "lake-tmp", ", ephemeral: true")).run()
    assert summary["sinks"]["lake"]["sent"]["retail.pos_transaction"] == 2 * 7200
    async with s3_client(moto) as c:
        names = {b["Name"] for b in (await c.list_buckets())["Buckets"]}
    assert "lake-tmp" not in names


def test_bucket_names_are_validated() -> None:
    from datafactory.config import ConfigError

    with pytest.raises(ConfigError, match=r"sinks\.lake\.bucket"):
        parse_config("""
packs: {retail: {}}
sinks: {lake: {type: aws_s3, bucket: Not_A_Bucket}}
""")
