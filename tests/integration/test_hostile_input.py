"""What a hostile or careless client sends cannot hurt the daemon: bounded YAML read off the
event loop, clear 4xx errors (never a 5xx), nothing echoed back or logged from headers,
secrets from the environment never shown, a hot reload that survives any file."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from datafactory.control.daemon import Daemon

pytestmark = pytest.mark.integration
TOKEN = "hostile-input-token-0123"

GOOD = """
run: {{name: shop, seed: 1}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}}}
sinks:
  out: {{type: file, path: "{out}"}}
"""

BOMB = "\n".join(
    [
        'a: &a ["x","x","x","x","x","x","x","x","x"]',
        *(
            f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "shop.yaml").write_text(GOOD.format(rate=200, out=tmp_path / "out"))
    d = Daemon(
        listen="127.0.0.1:0",
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        token=TOKEN,
        configs=str(configs),
        watch=True,
        data_root=str(tmp_path),
    )
    await d.start()
    yield d
    await d.shutdown()


async def call(d: Daemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    data = io.BytesIO(raw) if body is not None else None
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.request(method, f"http://127.0.0.1:{d.port}{path}", data=data) as r,
    ):
        return r.status, await r.json(content_type=None)


@pytest.mark.timed
async def test_yaml_is_bounded_and_never_blocks_the_loop(daemon: Daemon) -> None:
    async def health_while(coro: Any) -> tuple[Any, float]:
        """``coro``'s result, and the slowest /healthz answer meanwhile."""
        task = asyncio.ensure_future(coro)
        worst = 0.0
        while not task.done():
            t = time.monotonic()
            assert (await call(daemon, "GET", "/healthz"))[0] == 200
            worst = max(worst, time.monotonic() - t)
            await asyncio.sleep(0.01)
        return await task, worst

    cases = {
        BOMB: "aliases are expanded",
        "a: " + "[" * 5000 + "]" * 5000: "nested more than 64",
        "run: {name: a}\nrun: {name: b}\n": "given twice",
        "a: " + "x" * (1 << 20): "Too Large",  # the request itself is refused (413)
        "": "at least 1 character",  # the schema says so, and validation agrees
        "0": "expected a mapping",
    }
    for text, error in cases.items():
        (status, body), worst = await health_while(
            call(daemon, "POST", "/v1/runs", {"yaml": text, "start": False})
        )
        assert status in (413, 422) and error in body["error"], (status, body)
        assert worst < 0.5
    for depth in (100, 1000):  # within JSON's limit (the config's applies), and beyond it
        deep = b'{"spec": ' + b'{"a": ' * depth + b"{}" + b"}" * depth + b"}"
        status, body = await call(daemon, "POST", "/v1/runs", deep)
        assert status == 422, body  # the config's limit, or JSON's own (pydantic's parser)
        assert "nested more than 64" in body["error"] or "recursion limit" in body["error"]


async def test_no_path_or_name_gives_a_5xx(daemon: Daemon) -> None:
    for method, path, body in [
        ("POST", "/v1/runs", {"config": "a\x00b"}),
        ("POST", "/v1/runs", {"config": "x" * 5000}),
        ("POST", "/v1/runs", {"config": "../../etc/passwd"}),
        ("GET", "/console/a%00.js", None),
        ("GET", "/console/..%2fruns.py", None),
        ("GET", "/v1/schemas/" + "x" * 5000, None),
        ("GET", "/v1/schemas/retail.%00", None),
    ]:
        status, got = await call(daemon, method, path, body)
        assert status == 404, (path, status, got)


def raw_request(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


async def test_a_junk_byte_in_the_token_is_a_401_and_nothing_is_echoed(
    daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = (
        b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\xff\r\nContent-Length: 0\r\n\r\n"
    )
    answer = await asyncio.to_thread(raw_request, daemon.port, head)
    assert answer.startswith(b"HTTP/1.1 401")
    assert TOKEN.encode() not in answer
    assert TOKEN not in capsys.readouterr().err


async def test_secrets_from_the_environment_are_never_shown(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_SECRET", "s3cr3t-value-do-not-show")
    spec = GOOD.format(rate=10, out=tmp_path / "o").replace("name: shop", 'name: "${SHOP_SECRET}"')
    status, body = await call(daemon, "POST", "/v1/runs", {"yaml": spec, "start": False})
    assert status == 422 and "cannot come from the environment" in body["error"]
    assert "s3cr3t" not in str(body)
    spec = GOOD.format(rate=10, out=tmp_path / "o").replace(
        "type: file,", "type: file, max_bytes: '${SHOP_SECRET}',"
    )
    status, body = await call(daemon, "POST", "/v1/runs", {"yaml": spec, "start": False})
    assert status == 422 and "not shown" in str(body) and "s3cr3t" not in str(body)
    status, runs = await call(daemon, "GET", "/v1/runs")
    assert "s3cr3t" not in str(runs)


@pytest.mark.timed
async def test_rates_are_bounded_and_a_lower_rate_applies_at_once(
    daemon: Daemon, tmp_path: Path
) -> None:
    for base in (1e9, float("inf")):
        spec = GOOD.format(rate=base, out=tmp_path / "o")
        status, body = await call(daemon, "POST", "/v1/runs", {"yaml": spec, "start": False})
        assert status == 422 and "base" in body["error"], body
    status, run = await call(daemon, "POST", "/v1/runs", {"config": "shop"})
    rid, stream = run["id"], "retail.pos_transaction"
    for base in (5_000_000, 100):
        status, _ = await call(
            daemon,
            "PUT",
            f"/v1/runs/{rid}/streams/{stream}/rate",
            {"profile": {"profile": "constant", "base": base}},
        )
        assert status == 200
        await asyncio.sleep(1.5)
    released = []
    for _ in range(2):
        released.append((await call(daemon, "GET", f"/v1/runs/{rid}"))[1]["streams"][stream])
        await asyncio.sleep(2.0)
    rate = (released[1]["released"] - released[0]["released"]) / 2.0
    assert 50 < rate < 200, released  # 100/s again, not what the surplus would give


async def test_a_file_that_is_not_utf8_is_rejected_and_the_watcher_goes_on(
    daemon: Daemon, tmp_path: Path
) -> None:
    status, run = await call(daemon, "POST", "/v1/runs", {"config": "shop"})
    rid = run["id"]
    shop = tmp_path / "configs" / "shop.yaml"
    shop.write_bytes(b"run: {name: shop\xff, seed: 1}\n")
    status, body = await call(daemon, "POST", "/v1/reload")
    assert status == 200 and "not UTF-8" in body["rejected"][0]["error"]
    assert "shop.yaml" in body["rejected"][0]["error"]
    await asyncio.sleep(1.0)  # the watcher saw it too
    failures = daemon.registry.get_sample_value("datafactory_config_reload_failures_total")
    assert failures is not None and failures >= 2
    shop.write_text(GOOD.format(rate=300, out=tmp_path / "out"))  # the watcher applies this
    for _ in range(50):
        view = (await call(daemon, "GET", f"/v1/runs/{rid}"))[1]
        if view["streams"]["retail.pos_transaction"]["target_rate"] == 300:
            break
        await asyncio.sleep(0.2)
    assert view["streams"]["retail.pos_transaction"]["target_rate"] == 300


def test_validate_names_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"run:\n  name: \xff\xfe\n")
    r = subprocess.run(
        [sys.executable, "-m", "datafactory", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "bad.yaml" in r.stderr and "not UTF-8" in r.stderr, r.stderr
