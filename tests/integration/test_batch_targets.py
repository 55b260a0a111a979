"""Batch targets on a real S3 endpoint (moto) and a local folder: a file written piece by piece
goes up in parts of exactly ``part_size``, a second write of the same bytes is recognised
(a rerun after a kill mid-day), other bytes under the same name are refused, and a failed
upload leaves nothing open."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import boto3
import pytest

from datafactory.batch.targets import ExistsDifferentError, LocalTarget, S3Target
from datafactory.lifecycle.local import Moto

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


async def _write(target: S3Target | LocalTarget, key: str, data: bytes, piece: int) -> bool:
    up = await target.create(key, "application/octet-stream")
    for i in range(0, len(data), piece):
        await up.write(data[i : i + piece])
    return await up.commit(hashlib.sha256(data).hexdigest())


def test_s3_uploads_in_parts_and_recognises_a_rerun(moto: Moto) -> None:
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="parts")
    data = os.urandom(12 * MIB + 123)
    other = bytearray(data)
    other[7 * MIB] ^= 1

    async def go() -> None:
        t = S3Target("s3://parts/raw", 5 * MIB, moto.endpoint, "us-east-1")
        await t.open()
        try:
            assert await _write(t, "big.bin", data, 777_777) is True
            assert await _write(t, "big.bin", data, 3 * MIB) is False  # the same bytes
            with pytest.raises(ExistsDifferentError):
                await _write(t, "big.bin", bytes(other), MIB)
            assert await _write(t, "small.bin", b"x" * 1000, 100) is True
            assert await _write(t, "small.bin", b"x" * 1000, 1000) is False
            # a failure mid-file: the upload is aborted, nothing is left open
            up = await t.create("broken.bin", "application/octet-stream")
            await up.write(data[: 6 * MIB])
            await up.abort()
        finally:
            await t.close()

    asyncio.run(go())
    head = s3.head_object(Bucket="parts", Key="raw/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # 5 MiB + 5 MiB + the rest
    body = s3.get_object(Bucket="parts", Key="raw/big.bin")["Body"].read()
    assert body == data
    assert s3.head_object(Bucket="parts", Key="raw/small.bin")["Metadata"]["sha256"] == (
        hashlib.sha256(b"x" * 1000).hexdigest()
    )
    assert s3.list_multipart_uploads(Bucket="parts").get("Uploads", []) == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="parts")["Contents"]]
    assert sorted(keys) == ["raw/big.bin", "raw/small.bin"]


def test_local_files_appear_whole_or_not_at_all(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)

    async def go() -> None:
        t = LocalTarget(str(tmp_path))
        await t.open()
        up = await t.create("a/b.bin", "application/octet-stream")
        await up.write(data[:MIB])
        assert not (tmp_path / "a" / "b.bin").exists()  # a temp file until the commit
        await up.write(data[MIB:])
        assert await up.commit(hashlib.sha256(data).hexdigest()) is True
        assert await _write(t, "a/b.bin", data, MIB) is False
        with pytest.raises(ExistsDifferentError):
            await _write(t, "a/b.bin", data[::-1], MIB)
        gone = await t.create("a/c.bin", "application/octet-stream")
        await gone.write(data)
        await gone.abort()

    asyncio.run(go())
    assert (tmp_path / "a" / "b.bin").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin"]
