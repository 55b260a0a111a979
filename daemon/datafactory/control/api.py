"""The admin API (aiohttp): runs under ``/v1``, the OpenAPI document, live events (SSE),
the console, and the read-only ``/healthz``, ``/readyz``, ``/metrics``.

Mutating calls need ``Authorization: Bearer <token>``; the token is compared in constant time
and never logged. Errors are JSON: ``{"error": "...", "problems": [...]}`` naming the field.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from datafactory import yamltext
from datafactory.config import ConfigError
from datafactory.control import models
from datafactory.control.openapi import document
from datafactory.control.runs import IllegalTransition, NotFound

log = structlog.get_logger("datafactory.api")
# what a name in a path may be (anything else is a 404, never a file lookup)
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\.[a-z][a-z0-9_]{0,63}")
CONSOLE_FILE = re.compile(r"[A-Za-z0-9_-]{1,64}\.(html|js|css)")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, message: str, problems: list[str] | None = None) -> web.Response:
    return _json({"error": message, "problems": problems or [message]}, status)


def _pyd(e: ValidationError, prefix: str = "body") -> list[str]:
    out = []
    for err in e.errors(include_url=False):
        where = ".".join(str(p) for p in (prefix, *err["loc"]))
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(f"{where}: {msg}")
    return out


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests more than ``limit`` levels (looked at without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            items = node.values() if isinstance(node, dict) else node
            stack += [(x, depth + 1) for x in items]
    return False


class ApiError(Exception):
    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or [message]


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        raw = await request.read()
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"body: not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "body: expected a JSON object")
    try:
        # no coercion: what the schema says (as JSON: an array is a tuple's JSON form)
        return model.model_validate_json(raw, strict=True)
    except ValidationError as e:
        problems = _pyd(e)
        raise ApiError(422, problems[0], problems) from None


class AdminApi:
    def __init__(self, daemon: Any, token: str | None) -> None:
        self.daemon = daemon
        self.token = token
        self.app = web.Application(middlewares=[self._errors, self._auth])
        r = self.app.router
        r.add_get("/", self._console)
        r.add_get("/console/{file}", self._console_file)
        r.add_get("/openapi.json", self._openapi)
        r.add_get("/healthz", self._healthz)
        r.add_get("/readyz", self._readyz)
        r.add_get("/metrics", self._metrics)
        r.add_get("/v1/runs", self._list)
        r.add_post("/v1/runs", self._create)
        r.add_get("/v1/runs/{run_id}", self._inspect)
        r.add_get("/v1/runs/{run_id}/schemas", self._run_schemas)
        for verb in ("start", "pause", "resume", "stop", "rebalance"):
            r.add_post(f"/v1/runs/{{run_id}}/{verb}", self._action(verb))
        r.add_put("/v1/runs/{run_id}/streams/{stream}/rate", self._rate)
        r.add_put("/v1/runs/{run_id}/chaos", self._chaos)
        r.add_get("/v1/packs", self._packs)
        r.add_get("/v1/schemas", self._schemas)
        r.add_get("/v1/schemas/{event_type}", self._schema)
        r.add_get("/v1/configs", self._configs)
        r.add_post("/v1/reload", self._reload)
        r.add_get("/v1/events", self._events)

    # -- middleware -------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in MUTATING:
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {self.token}" if self.token else None
            if expected is None:
                return error(401, "mutating calls are disabled: the daemon has no token")
            # a header's bytes as they came (not text: a stray byte must not fail here)
            raw = given.encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(raw, expected.encode()):
                return error(401, "missing or wrong bearer token (Authorization: Bearer ...)")
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return error(e.status, e.message, e.problems)
        except web.HTTPException as e:
            resp = error(e.status, e.reason or "error")
            if "Allow" in e.headers:  # 405 says which methods are allowed (RFC 9110)
                resp.headers["Allow"] = e.headers["Allow"]
            return resp
        except NotFound as e:
            return error(404, f"not found: {e.args[0]}")
        except IllegalTransition as e:
            return error(409, str(e))
        except ConfigError as e:
            problems = str(e).split("\n  ")[1:]
            return error(422, problems[0] if problems else str(e), problems)
        except Exception as e:  # a bug: say so as JSON, and log where (never what it held:
            # a request's headers or body may be in an exception's message)
            ref = secrets.token_hex(4)
            tb = e.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            at = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
            log.error("api_error", ref=ref, method=request.method, error=type(e).__name__, at=at)
            return error(500, f"internal error (logged as api_error ref {ref})")

    # -- runs -------------------------------------------------------------------------------

    async def _view(self, run: Any, history: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = run.view()
        if history:
            out["history"] = await self.daemon.manager.history(run.id)
        return out

    async def _list(self, _req: web.Request) -> web.Response:
        runs = [await self._view(r) for r in self.daemon.manager.runs.values()]
        return _json({"runs": runs})

    async def _create(self, request: web.Request) -> web.Response:
        body: models.CreateRun = await _body(request, models.CreateRun)
        if body.config is not None:
            text, source = self.daemon.config_text(body.config), f"config:{body.config}"
        elif body.spec is not None:
            if _deeper_than(body.spec, yamltext.MAX_DEPTH):
                raise ApiError(422, f"body.spec: nested more than {yamltext.MAX_DEPTH} levels deep")
            text, source = orjson.dumps(body.spec).decode(), "inline"
        else:
            assert body.yaml is not None
            text, source = body.yaml, "inline"
        run = await self.daemon.manager.create(text, source, start=body.start)
        return _json(await self._view(run), 201)

    async def _inspect(self, request: web.Request) -> web.Response:
        run = self.daemon.manager.get(request.match_info["run_id"])
        return _json(await self._view(run, history=True))

    async def _run_schemas(self, request: web.Request) -> web.Response:
        """The Avro schema of each of a run's streams (a template's are derived from its
        config: the shipped ones do not have them)."""
        run = self.daemon.manager.get(request.match_info["run_id"])
        return _json({p.event_type: p.schema.raw for p in run.config.streams})

    def _action(self, verb: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            m = self.daemon.manager
            run_id = request.match_info["run_id"]
            fn = {
                "start": m.start_run,
                "pause": m.pause,
                "resume": m.resume,
                "stop": m.stop,
                "rebalance": m.rebalance,
            }
            run = await fn[verb](run_id)
            return _json(await self._view(run))

        return handle

    async def _rate(self, request: web.Request) -> web.Response:
        body: models.RateChange = await _body(request, models.RateChange)
        m = self.daemon.manager
        run = await m.set_rate(
            request.match_info["run_id"], request.match_info["stream"], body.profile
        )
        return _json(await self._view(run))

    async def _chaos(self, request: web.Request) -> web.Response:
        body: models.ChaosChange = await _body(request, models.ChaosChange)
        m = self.daemon.manager
        run = await m.set_chaos(request.match_info["run_id"], body.steps, body.rates)
        return _json(await self._view(run))

    # -- catalogue --------------------------------------------------------------------------

    async def _packs(self, _req: web.Request) -> web.Response:
        from datafactory.pack import registered_packs

        out = []
        for name, pack in sorted(registered_packs().items()):
            out.append(
                {
                    "pack": name,
                    "description": pack.description,
                    "streams": [
                        {
                            "name": s.name,
                            "event_type": s.event_type(name),
                            "description": s.description,
                        }
                        for s in pack.streams.values()
                    ],
                    "params": pack.Params.model_json_schema(),
                }
            )
        return _json(out)

    async def _schemas(self, _req: web.Request) -> web.Response:
        from datafactory.schema import list_schemas

        return _json(list_schemas())

    async def _schema(self, request: web.Request) -> web.Response:
        from datafactory.schema import load_schema

        name = request.match_info["event_type"]
        if not EVENT_TYPE.fullmatch(name):
            raise NotFound(f"schema {name[:64]!r}")
        try:
            return _json(load_schema(name).raw)
        except KeyError as e:
            raise NotFound(str(e.args[0])) from None

    async def _configs(self, _req: web.Request) -> web.Response:
        return _json(self.daemon.config_names())

    async def _reload(self, _req: web.Request) -> web.Response:
        return _json(await self.daemon.reload_all("api"))

    # -- telemetry --------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        queue = self.daemon.telemetry.subscribe()
        try:
            while True:
                event = await queue.get()
                await resp.write(b"data: " + orjson.dumps(event) + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.daemon.telemetry.unsubscribe(queue)
        return resp

    async def _healthz(self, _req: web.Request) -> web.Response:
        return _json({"status": "ok", "runs": len(self.daemon.manager.runs)})

    async def _readyz(self, _req: web.Request) -> web.Response:
        ready, why = self.daemon.ready()
        return _json({"ready": ready, "reason": why}, 200 if ready else 503)

    async def _metrics(self, _req: web.Request) -> web.Response:
        body = generate_latest(self.daemon.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _openapi(self, _req: web.Request) -> web.Response:
        return _json(document())

    # -- console ----------------------------------------------------------------------------

    async def _console(self, _req: web.Request) -> web.Response:
        return await self._static("index.html")

    async def _console_file(self, request: web.Request) -> web.Response:
        return await self._static(request.match_info["file"])

    async def _static(self, name: str) -> web.Response:
        types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
        ext = name[name.rfind(".") :] if "." in name else ""
        if ext not in types or not CONSOLE_FILE.fullmatch(name):
            raise NotFound(f"console/{name[:64]}")
        path = resources.files("datafactory.control").joinpath(f"console/{name}")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"console/{name}") from None
        return web.Response(body=data, content_type=types[ext])
