"""A Kinesis fault shim: a loopback HTTP proxy in front of a real Kinesis endpoint (moto).

Neither local emulator ever answers PutRecords with a partial failure or throttling, so the
shim makes them: for each PutRecords call it withholds a seeded random share of the entries,
forwards the rest upstream, and merges the answers, marking the withheld entries
``ProvisionedThroughputExceededException`` -- exactly what a busy shard does. It also counts
how often each entry (by its data) was submitted and whether an entry that was already
accepted is ever sent again.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import aiohttp
import orjson
from aiohttp import web

HOP = {"host", "content-length", "transfer-encoding", "connection"}


class KinesisFaultShim:
    def __init__(self, upstream: str, throttle_rate: float, seed: int = 0) -> None:
        self.upstream = upstream
        self.throttle_rate = throttle_rate
        self.rng = random.Random(seed)
        self.submissions: Counter[str] = Counter()
        self.accepted: set[str] = set()
        self.resent_after_accept = 0
        self.throttled = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._session:
            await self._session.close()

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not request.headers.get("X-Amz-Target", "").endswith(".PutRecords"):
            status, data, ctype = await self._forward(request, body)
            return web.Response(status=status, body=data, content_type=ctype.split(";")[0])
        req = orjson.loads(body)
        records = req["Records"]
        withheld = [self.rng.random() < self.throttle_rate for _ in records]
        for r in records:
            self.submissions[r["Data"]] += 1
            if r["Data"] in self.accepted:
                self.resent_after_accept += 1
        forward = [r for r, w in zip(records, withheld, strict=True) if not w]
        answers: list[dict[str, Any]] = []
        if forward:
            status, data, _ = await self._forward(
                request, orjson.dumps({**req, "Records": forward})
            )
            if status != 200:
                return web.Response(
                    status=status, body=data, content_type="application/x-amz-json-1.1"
                )
            answers = orjson.loads(data)["Records"]
        it = iter(answers)
        merged, failed = [], 0
        for r, w in zip(records, withheld, strict=True):
            if w:
                self.throttled += 1
                merged.append(
                    {
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded for shard (injected by the shim)",
                    }
                )
                failed += 1
            else:
                a = next(it)
                merged.append(a)
                if "ErrorCode" in a:
                    failed += 1
                else:
                    self.accepted.add(r["Data"])
        out = {"FailedRecordCount": failed, "Records": merged}
        return web.Response(body=orjson.dumps(out), content_type="application/x-amz-json-1.1")
