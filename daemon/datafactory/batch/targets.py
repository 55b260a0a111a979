"""Where batch files go: a local directory or an S3 prefix, written piece by piece.

A file is created with :meth:`create` and its bytes are written as they are encoded, so a
file of any size costs at most one S3 part (or nothing, locally) in memory:
:class:`LocalUpload` writes a temp file beside the target and renames it on commit;
:class:`S3Upload` sends one PutObject for a small file and a multipart upload (parts of
exactly ``part_size``) for a big one, aborted on failure, its CompleteMultipartUpload answer
checked. Both create only if absent (``If-None-Match: *`` on S3): a file already there with
the same bytes counts as written (a rerun), one with other bytes is an error (the config or
seed changed under the same output).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

from datafactory.sinks import aws

MAX_PARTS = 10_000  # S3's limit on parts per multipart upload


class ExistsDifferentError(Exception):
    """A file of this name exists with other bytes: the same output, another config."""


class Upload(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def commit(self, digest: str) -> bool: ...

    async def abort(self) -> None: ...


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalTarget:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        pass

    async def create(self, key: str, content_type: str) -> LocalUpload:
        return LocalUpload(self.root / key)

    async def put(self, key: str, data: bytes, digest: str, content_type: str) -> bool:
        """Create ``key`` with ``data``; False when it was already there, identical."""
        up = await self.create(key, content_type)
        await up.write(data)
        return await up.commit(digest)

    async def put_state(self, key: str, data: bytes) -> None:
        """A state snapshot: overwritten."""

        def replace() -> None:
            path = self.root / key
            up = LocalUpload(path)
            up.write_now(data)
            up.close()
            os.replace(up.tmp, path)

        await asyncio.to_thread(replace)

    async def read(self, key: str) -> bytes | None:
        path = self.root / key
        return await asyncio.to_thread(lambda: path.read_bytes() if path.exists() else None)

    async def abort_incomplete(self) -> int:
        """Temp files of writers that were killed."""
        n = 0
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            n += 1
        return n


class LocalUpload:
    """A file being written: a temp file beside it until :meth:`commit` renames it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._f: Any = None

    def write_now(self, data: bytes) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.tmp, "wb")  # noqa: SIM115 (closed by commit or abort)
        self._f.write(data)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self.write_now, data)

    async def commit(self, digest: str) -> bool:
        """True when the file was created; False when it was there with the same bytes."""

        def commit() -> bool:
            self.write_now(b"")
            self.close()
            if self.path.exists():
                self.tmp.unlink()
                with open(self.path, "rb") as f:
                    if hashlib.file_digest(f, "sha256").hexdigest() == digest:
                        return False
                raise ExistsDifferentError(f"{self.path} exists with other content")
            os.replace(self.tmp, self.path)
            return True

        return await asyncio.to_thread(commit)

    async def abort(self) -> None:
        def drop() -> None:
            if self._f is not None:
                self._f.close()
                self.tmp.unlink(missing_ok=True)

        await asyncio.to_thread(drop)


class S3Target:
    """aiobotocore; conditional create; multipart once a file passes ``part_size``."""

    def __init__(self, url: str, part_size: int, endpoint_url: str | None, region: str) -> None:
        rest = url[len("s3://") :]
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.part_size = part_size
        self.endpoint_url = endpoint_url
        self.region = region
        self._cm: Any = None
        self.client: Any = None

    async def open(self) -> None:
        self._cm = aws.client("s3", self.region, self.endpoint_url)
        self.client = await self._cm.__aenter__()

    async def close(self) -> None:
        cm, self._cm, self.client = self._cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                await self.client.create_bucket(**aws.bucket_args(self.bucket, self.region))
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def create(self, key: str, content_type: str, conditional: bool = True) -> S3Upload:
        """``conditional``: create only if absent (an object already there is compared with
        what would have been written, not written again)."""
        up = S3Upload(self, self.prefix + key, content_type, conditional)
        if conditional:
            up.existing = await self.head(up.key)
        return up

    async def put(self, key: str, data: bytes, digest: str, content_type: str) -> bool:
        """Create ``key`` with ``data``; False when it was already there, identical."""
        up = await self.create(key, content_type)
        await up.write(data)
        return await up.commit(digest)

    async def put_state(self, key: str, data: bytes) -> None:
        """A state snapshot: overwritten; multipart above ``part_size`` like the data."""
        up = await self.create(key, "application/octet-stream", conditional=False)
        await up.write(data)
        await up.commit("")

    async def head(self, full_key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(await self.client.head_object(Bucket=self.bucket, Key=full_key))
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise

    async def digest_of(self, full_key: str, head: dict[str, Any] | None) -> str:
        """An object's SHA-256: from its metadata (one-part objects carry it), else read."""
        head = head if head is not None else await self.head(full_key) or {}
        if d := head.get("Metadata", {}).get("sha256"):
            return str(d)
        h = hashlib.sha256()
        r = await self.client.get_object(Bucket=self.bucket, Key=full_key)
        async with r["Body"] as body:
            while chunk := await body.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    async def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            r = await self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError:
            return None
        async with r["Body"] as body:
            return bytes(await body.read())

    async def abort_incomplete(self) -> int:
        """Multipart uploads under the prefix that a killed run left open."""
        n = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for u in page.get("Uploads", []):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]
                )
                n += 1
        return n


class S3Upload:
    """An object being written: bytes gather up to a part; the first full part starts a
    multipart upload (parts of exactly ``part_size``, the last one smaller), so memory stays
    a part's. A small object is one PutObject, its SHA-256 in the metadata. When the key
    existed at the start (``existing``), nothing is sent: the bytes are compared at commit."""

    def __init__(self, target: S3Target, key: str, content_type: str, conditional: bool) -> None:
        self.t, self.key, self.content_type = target, key, content_type
        self.conditional = conditional
        self.existing: dict[str, Any] | None = None
        self.buf = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        if self.existing is not None:
            return
        self.buf += data
        size = self.t.part_size
        while len(self.buf) > size:  # a byte kept back: the last part is never empty
            await self._part(bytes(self.buf[:size]))
            del self.buf[:size]

    async def _part(self, body: bytes) -> None:
        c, n = self.t.client, len(self.parts) + 1
        if n > MAX_PARTS:
            raise RuntimeError(
                f"s3://{self.t.bucket}/{self.key}: more than {MAX_PARTS} parts of "
                f"{self.t.part_size} bytes; raise batch.part_size or lower batch.file_rows"
            )
        if self.upload_id is None:
            up = await c.create_multipart_upload(
                Bucket=self.t.bucket, Key=self.key, ContentType=self.content_type
            )
            self.upload_id = up["UploadId"]
        r = await c.upload_part(
            Bucket=self.t.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=n, Body=body
        )
        self.parts.append({"PartNumber": n, "ETag": r["ETag"]})

    async def commit(self, digest: str) -> bool:
        """True when the object was created; False when it was there with the same bytes."""
        from botocore.exceptions import ClientError

        if self.existing is not None:
            return await self._same(digest, self.existing)
        c, bucket = self.t.client, self.t.bucket
        cond = {"IfNoneMatch": "*"} if self.conditional else {}
        try:
            if self.upload_id is None:
                await c.put_object(
                    Bucket=bucket, Key=self.key, Body=bytes(self.buf),
                    ContentType=self.content_type,
                    Metadata={"sha256": digest} if digest else {}, **cond,
                )  # fmt: skip
                return True
            await self._part(bytes(self.buf))
            done = await c.complete_multipart_upload(
                Bucket=bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts}, **cond,
            )  # fmt: skip
            self.upload_id = None  # completed: nothing to abort any more
            # S3 can answer 200 with an error in the body; botocore raises for those, and a
            # body without the object's ETag is not a completed upload either
            etag = str(done.get("ETag", ""))
            if (
                not etag
                or done.get("Key", self.key) != self.key
                or not etag.strip('"').endswith(f"-{len(self.parts)}")
            ):
                raise RuntimeError(f"CompleteMultipartUpload of {self.key}: unexpected {done}")
            return True
        except ClientError as e:
            await self.abort()
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 412 or e.response.get("Error", {}).get("Code") == "PreconditionFailed":
                return await self._same(digest, None)  # created meanwhile
            raise
        except BaseException:
            await self.abort()
            raise

    async def _same(self, digest: str, head: dict[str, Any] | None) -> bool:
        if await self.t.digest_of(self.key, head) == digest:
            return False
        raise ExistsDifferentError(f"s3://{self.t.bucket}/{self.key} exists with other content")

    async def abort(self) -> None:
        upload_id, self.upload_id = self.upload_id, None
        self.buf = bytearray()
        if upload_id is not None:
            await self.t.client.abort_multipart_upload(
                Bucket=self.t.bucket, Key=self.key, UploadId=upload_id
            )


def open_target(out: str, part_size: int, endpoint_url: str | None, region: str) -> Any:
    if out.startswith("s3://"):
        return S3Target(out, part_size, endpoint_url, region)
    return LocalTarget(out)
