"""The admin API of a real daemon on a loopback port: every endpoint, bad input, auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from datafactory.control.daemon import Daemon

pytestmark = pytest.mark.integration
TOKEN = "t0ken-for-tests"

CONFIG = """
run: {{name: {name}, seed: 1}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}}}
sinks:
  out: {{type: file, path: "{out}"}}
chaos:
  - {{step: drop, rate: 0.01}}
  - {{step: duplicate, rate: 0.0}}
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "shop.yaml").write_text(CONFIG.format(name="shop", rate=2000, out=tmp_path / "out"))
    d = Daemon(
        listen="127.0.0.1:0",
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        token=TOKEN,
        configs=str(configs),
        watch=False,
        data_root=str(tmp_path),
    )
    await d.start()
    yield d
    await d.shutdown()


class Client:
    def __init__(self, d: Daemon, session: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{d.port}"
        self.s = session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        async with self.s.request(method, self.base + path, data=data, headers=headers) as r:
            text = await r.read()
            try:
                return r.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return r.status, text.decode()


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as s:
        yield Client(daemon, s)


async def wait_state(c: Client, run_id: str, *states: str, within: float = 20) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        status, view = await c.call("GET", f"/v1/runs/{run_id}")
        assert status == 200
        if view["state"] in states:
            return view  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, view["state"]
        await asyncio.sleep(0.1)


@pytest.mark.timed
async def test_run_lifecycle_through_the_api(client: Client, tmp_path: Path) -> None:
    status, run = await client.call("POST", "/v1/runs", {"config": "shop"})
    assert status == 201 and run["source"] == "config:shop"
    rid = run["id"]
    view = await wait_state(client, rid, "RUNNING")
    await asyncio.sleep(1.5)
    status, view = await client.call("GET", f"/v1/runs/{rid}")
    assert view["streams"]["retail.pos_transaction"]["released"] > 1000
    assert view["counters"][0]["sink"] == "out" and view["counters"][0]["acked"] > 0
    assert [h["to"] for h in view["history"]][:3] == ["PENDING", "PROVISIONING", "RUNNING"]

    # pause: nothing more is released; resume: it goes on
    assert (await client.call("POST", f"/v1/runs/{rid}/pause"))[1]["state"] == "PAUSED"
    await asyncio.sleep(0.5)
    a = (await client.call("GET", f"/v1/runs/{rid}"))[1]["streams"]["retail.pos_transaction"]
    await asyncio.sleep(1.0)
    b = (await client.call("GET", f"/v1/runs/{rid}"))[1]["streams"]["retail.pos_transaction"]
    assert a["released"] == b["released"]
    status, err = await client.call("POST", f"/v1/runs/{rid}/pause")
    assert status == 409 and "is PAUSED: cannot pause" in err["error"]
    assert (await client.call("POST", f"/v1/runs/{rid}/resume"))[1]["state"] == "RUNNING"
    status, err = await client.call("POST", f"/v1/runs/{rid}/resume")
    assert status == 409 and "cannot resume" in err["error"]

    # live rate and chaos changes
    status, view = await client.call(
        "PUT",
        f"/v1/runs/{rid}/streams/pos_transaction/rate",
        {"profile": {"profile": "constant", "base": 500}},
    )
    assert status == 200
    await asyncio.sleep(2.5)
    view = (await client.call("GET", f"/v1/runs/{rid}"))[1]
    assert view["streams"]["retail.pos_transaction"]["target_rate"] == 500
    assert 350 < view["streams"]["retail.pos_transaction"]["rate"] < 650
    status, view = await client.call("PUT", f"/v1/runs/{rid}/chaos", {"rates": {"duplicate": 0.5}})
    assert status == 200
    await asyncio.sleep(1.5)
    view = (await client.call("GET", f"/v1/runs/{rid}"))[1]
    assert view["chaos"].get("retail.pos_transaction/duplicate/duplicate", 0) > 100
    status, view = await client.call(
        "PUT", f"/v1/runs/{rid}/chaos", {"steps": [{"step": "hot_key", "rate": 0.1}]}
    )
    assert status == 200

    # stop drains: every released event is in the file
    assert (await client.call("POST", f"/v1/runs/{rid}/stop"))[0] == 200
    view = await wait_state(client, rid, "CANCELLED")
    released = view["streams"]["retail.pos_transaction"]["released"]
    lines = sum(len(f.read_bytes().splitlines()) for f in (tmp_path / "out").rglob("*.jsonl"))
    c = view["counters"][0]
    assert c["acked"] == lines and c["failed"] == 0
    assert lines >= released - c["chaos_dropped"]
    status, err = await client.call("POST", f"/v1/runs/{rid}/stop")
    assert status == 409 and "is CANCELLED" in err["error"]
    status, err = await client.call("POST", f"/v1/runs/{rid}/start")
    assert status == 409


async def test_inline_specs_pending_runs_and_catalogue(client: Client, tmp_path: Path) -> None:
    spec = {
        "run": {"name": "inline", "seed": 3, "clock": "simulated"},
        "packs": {"retail": {"streams": {"pos_transaction": {"max_events": 500}}}},
        "sinks": {"out": {"type": "file", "path": str(tmp_path / "inline")}},
    }
    status, run = await client.call("POST", "/v1/runs", {"spec": spec, "start": False})
    assert status == 201 and run["state"] == "PENDING" and run["source"] == "inline"
    assert (await client.call("POST", f"/v1/runs/{run['id']}/start"))[0] == 200
    view = await wait_state(client, run["id"], "COMPLETED")
    assert view["counters"][0]["acked"] == 500
    yaml_text = CONFIG.format(name="y", rate=100, out=tmp_path / "y")
    status, run = await client.call("POST", "/v1/runs", {"yaml": yaml_text, "start": False})
    assert status == 201
    assert (await client.call("POST", f"/v1/runs/{run['id']}/stop"))[1]["state"] == "CANCELLED"

    # a template's streams: their schemas are the run's (derived from its config)
    tpl = {
        "run": {"name": "tpl", "seed": 3, "clock": "simulated"},
        "packs": {"template": {
            "params": {"streams": {"orders": {"fields": {
                "ship": {"gen": "object", "fields": {"due": {"gen": "date"}}}}}}},
            "streams": {"orders": {"max_events": 10}}}},
        "sinks": {"out": {"type": "file", "path": str(tmp_path / "tpl")}},
    }  # fmt: skip
    status, run = await client.call("POST", "/v1/runs", {"spec": tpl, "start": False})
    assert status == 201
    status, schemas = await client.call("GET", f"/v1/runs/{run['id']}/schemas")
    ship = schemas["template.orders"]["fields"][2]
    assert status == 200 and ship["name"] == "ship" and ship["type"]["type"] == "record"
    assert (await client.call("GET", "/v1/runs/nope/schemas"))[0] == 404
    assert (await client.call("POST", f"/v1/runs/{run['id']}/stop"))[0] == 200

    status, runs = await client.call("GET", "/v1/runs")
    assert status == 200 and len(runs["runs"]) == 3
    # an inline spec writes under the data root only (the operator's named configs anywhere)
    for bad in ("/etc/cron.d", str(tmp_path / ".." / ".." / "x"), "relative/to/the/cwd"):
        spec["sinks"] = {"out": {"type": "file", "path": bad}}
        status, err = await client.call("POST", "/v1/runs", {"spec": spec, "start": False})
        assert status == 422 and "outside this daemon's data root" in err["error"], err
    status, packs = await client.call("GET", "/v1/packs")
    by_name = {p["pack"]: p for p in packs}
    assert by_name["retail"]["streams"][0]["name"] == "pos_transaction"
    assert {s["name"] for s in by_name["iot"]["streams"]} == {
        "telemetry", "heartbeat", "alert", "device_status"
    }  # fmt: skip
    status, schemas = await client.call("GET", "/v1/schemas")
    assert "retail.pos_transaction" in schemas
    status, schema = await client.call("GET", "/v1/schemas/retail.pos_transaction")
    assert status == 200 and schema["name"] == "PosTransaction"
    assert (await client.call("GET", "/v1/schemas/nope.nothing"))[0] == 404
    assert (await client.call("GET", "/v1/configs"))[1] == ["shop"]
    status, health = await client.call("GET", "/healthz")
    assert status == 200 and health["status"] == "ok"
    assert (await client.call("GET", "/readyz"))[1]["ready"] is True
    status, text = await client.call("GET", "/metrics")
    assert "datafactory_runs{state=" in text
    status, doc = await client.call("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.") and "/v1/runs/{run_id}/chaos" in doc["paths"]
    status, page = await client.call("GET", "/")
    assert status == 200 and "<canvas" in page
    assert (await client.call("GET", "/console/../../etc/passwd"))[0] == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v1/runs", {}, 422, "give exactly one of config, spec, yaml"),
        ("POST", "/v1/runs", {"config": "shop", "colour": 1}, 422, "body.colour: unknown field"),
        ("POST", "/v1/runs", {"config": 5}, 422, "body.config: Input should be a valid string"),
        ("POST", "/v1/runs", {"config": "missing"}, 404, "config 'missing'"),
        ("POST", "/v1/runs", [1], 422, "expected a JSON object"),
        (
            "POST",
            "/v1/runs",
            {"spec": {"packs": {"retail": {}}, "sinks": {"s": {"type": "ftp"}}}},
            422,
            "sinks.s.type: unknown sink type 'ftp'",
        ),
        ("POST", "/v1/runs/nope/pause", None, 404, "not found: nope"),
        ("GET", "/v1/runs/nope", None, 404, "not found: nope"),
    ],
)
async def test_bad_input_is_rejected_with_a_message_naming_the_field(
    client: Client, method: str, path: str, body: Any, status: int, message: str
) -> None:
    got, err = await client.call(method, path, body)
    assert got == status and message in err["error"], err


async def test_bad_live_changes_leave_the_run_as_it_was(client: Client) -> None:
    rid = (await client.call("POST", "/v1/runs", {"config": "shop"}))[1]["id"]
    await wait_state(client, rid, "RUNNING")
    cases = [
        ("PUT", f"/v1/runs/{rid}/streams/pos_transaction/rate", {"profile": {"profile": "x"}}, 422),
        (
            "PUT",
            f"/v1/runs/{rid}/streams/pos_transaction/rate",
            {"profile": {"profile": "constant"}},
            422,
        ),
        (
            "PUT",
            f"/v1/runs/{rid}/streams/nope/rate",
            {"profile": {"profile": "constant", "base": 1}},
            404,
        ),
        ("PUT", f"/v1/runs/{rid}/chaos", {"rates": {"drop": 3}}, 422),
        ("PUT", f"/v1/runs/{rid}/chaos", {"rates": {"nope": 0.1}}, 404),  # no such step
        ("PUT", f"/v1/runs/{rid}/chaos", {"steps": [{"step": "explode", "rate": 1}]}, 422),
        ("PUT", f"/v1/runs/{rid}/chaos", {"steps": [], "rates": {}}, 422),
    ]
    for method, path, body, status in cases:
        got, err = await client.call(method, path, body)
        assert got == status and err["error"], (path, body, err)
    got, err = await client.call("PUT", f"/v1/runs/{rid}/chaos", raw=b"{not json")
    assert got == 400 and "not JSON" in err["error"]
    view = (await client.call("GET", f"/v1/runs/{rid}"))[1]
    assert (
        view["state"] == "RUNNING"
        and view["streams"]["retail.pos_transaction"]["target_rate"] == 2000
    )
    await client.call("POST", f"/v1/runs/{rid}/stop")


async def test_every_mutating_call_needs_the_token(client: Client, daemon: Daemon) -> None:
    doc = (await client.call("GET", "/openapi.json"))[1]
    mutating = [
        (m.upper(), p.replace("{run_id}", "x").replace("{stream}", "s"))
        for p, ops in doc["paths"].items()
        for m in ops
        if m in ("post", "put", "patch", "delete")
    ]
    assert len(mutating) >= 8
    for method, path in mutating:
        status, err = await client.call(method, path, {}, auth=False)
        assert status == 401 and "bearer token" in err["error"], (method, path)
    async with client.s.post(
        client.base + "/v1/runs", data=b"{}", headers={"Authorization": "Bearer wrong"}
    ) as r:
        assert r.status == 401
    # read-only endpoints need none
    for path in ("/v1/runs", "/v1/packs", "/healthz", "/metrics", "/openapi.json"):
        assert (await client.call("GET", path, auth=False))[0] == 200


@pytest.mark.timed
async def test_sse_streams_rates_per_run_stream_and_sink(client: Client) -> None:
    rid = (await client.call("POST", "/v1/runs", {"config": "shop"}))[1]["id"]
    ticks: list[dict[str, Any]] = []
    async with client.s.get(client.base + "/v1/events") as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        async for line in r.content:
            if line.startswith(b"data: "):
                ev = orjson.loads(line[6:])
                if ev["type"] == "tick":
                    ticks.append(ev)
                    if len(ticks) == 4:
                        break
    run = next(x for x in ticks[-1]["runs"] if x["id"] == rid)
    assert run["state"] == "RUNNING"
    assert 1000 < run["streams"]["retail.pos_transaction"]["eps"] < 3000
    assert 1000 < run["sinks"]["out"]["eps"] < 3000
    assert "retail.pos_transaction/drop/drop" in run["chaos"]


def test_non_loopback_bind_needs_a_token(tmp_path: Path) -> None:
    for token in (None, "x", "fifteen chars.."):  # none, or one that is easy to guess
        with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
            Daemon(listen="0.0.0.0:0", ledger=f"sqlite:///{tmp_path}/l.db", token=token)
    # a name is looked up: all its addresses must be loopback
    with pytest.raises(ValueError, match=r"refusing to listen on 127\.attacker\.invalid"):
        Daemon(listen="127.attacker.invalid:0", ledger=f"sqlite:///{tmp_path}/l.db")
    Daemon(listen="localhost:0", ledger=f"sqlite:///{tmp_path}/l.db")
    Daemon(listen="0.0.0.0:0", ledger=f"sqlite:///{tmp_path}/l.db", token="sixteen chars..!")


async def test_api_changes_are_config_edits_through_the_one_reload_path(
    client: Client, daemon: Daemon
) -> None:
    """A rate set by the API is what a later reload compares against: reloading the file
    (still at 2,000/s) brings the file's rate back. API chaos steps meet the same checks
    as a config file."""
    status, run = await client.call("POST", "/v1/runs", {"config": "shop"})
    rid = run["id"]
    await wait_state(client, rid, "RUNNING")
    stream = "retail.pos_transaction"
    status, view = await client.call(
        "PUT",
        f"/v1/runs/{rid}/streams/{stream}/rate",
        {"profile": {"profile": "constant", "base": 300}},
    )
    assert status == 200 and view["streams"][stream]["target_rate"] == 300
    # the edit is the run's config now (a restart resumes with it)
    rec = await daemon.manager.ledger.get(rid)
    assert rec is not None and "300" in rec.config and "duplicate" in rec.config
    status, body = await client.call("POST", "/v1/reload")
    assert status == 200 and [r["run"] for r in body["reloaded"]] == [rid]
    assert body["reloaded"][0]["applied"] == [f"rate:{stream}"]
    view = (await client.call("GET", f"/v1/runs/{rid}"))[1]
    assert view["streams"][stream]["target_rate"] == 2000
    # chaos by API: the config's cross-checks, the config's messages
    status, err = await client.call(
        "PUT", f"/v1/runs/{rid}/chaos", {"steps": [{"step": "drop", "rate": 0.1, "streams": ["x"]}]}
    )
    assert status == 422 and "no enabled stream 'x'" in err["error"], err
    assert "chaos.0.streams.0" in err["error"]
    status, err = await client.call("PUT", f"/v1/runs/{rid}/streams/{stream}/rate", {"profile": 5})
    assert status == 422
    view = (await client.call("GET", f"/v1/runs/{rid}"))[1]
    assert view["streams"][stream]["target_rate"] == 2000  # a rejected change changes nothing
    assert (await client.call("POST", f"/v1/runs/{rid}/stop"))[0] == 200
