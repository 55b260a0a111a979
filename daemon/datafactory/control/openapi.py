"""The OpenAPI 3 document of the admin API, built from the same pydantic models the
handlers validate with (so the two cannot drift apart)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from datafactory import __version__
from datafactory.control import models

_MODELS: list[type[BaseModel]] = [
    models.CreateRun,
    models.RateChange,
    models.ChaosChange,
    models.Error,
    models.RunView,
    models.RunList,
    models.ReloadResult,
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad request (malformed JSON)",
        401: "missing or wrong bearer token",
        404: "no such run, config or stream",
        409: "the run's state does not allow this",
        422: "invalid body: the message names the field",
    }
    return {str(c): {"description": text[c], "content": _json(_ref("Error"))} for c in codes}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    body: str | None = None,
    errors: tuple[int, ...] = (),
    mutating: bool = False,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**ok, **_errors(*errors)}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if mutating:
        op["security"] = [{"bearer": []}]
        op["responses"].update(_errors(401))
    if params:
        op["parameters"] = params
    return op


RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
STREAM = {"name": "stream", "in": "path", "required": True, "schema": {"type": "string"}}
_RUN = {"200": {"description": "the run", "content": _json(_ref("RunView"))}}
_ANY = {"type": "object", "additionalProperties": True}


def _require_discriminators(schemas: dict[str, Any]) -> None:
    """A tagged union's tag is required in every variant (the handler needs it to pick one,
    even where the model gives it a default)."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            disc = node.get("discriminator")
            if isinstance(disc, dict):
                for ref in disc.get("mapping", {}).values():
                    target = schemas.get(ref.rsplit("/", 1)[-1])
                    if target is not None:
                        req = target.setdefault("required", [])
                        if disc["propertyName"] not in req:
                            req.append(disc["propertyName"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schemas)


def _chaos_steps(schemas: dict[str, Any]) -> None:
    """A chaos change's steps are the chaos steps' own settings, one schema per step."""
    from datafactory.chaos.steps import STEPS

    refs = []
    for kind, cls in sorted(STEPS.items()):
        s = cls.Config.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(s.pop("$defs", {}))
        s["properties"]["step"] = {"const": kind, "description": "which fault"}
        name = f"ChaosStep_{kind}"
        schemas[name] = s
        refs.append(_ref(name))
    schemas["ChaosChange"]["properties"]["steps"]["items"] = {"oneOf": refs}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for m in _MODELS:
        s = m.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(s.pop("$defs", {}))
        schemas[m.__name__] = s
    _chaos_steps(schemas)
    _require_discriminators(schemas)
    action = {
        verb: {
            "post": _op(
                f"{verb} the run",
                _RUN,
                errors=(404, 409),
                mutating=True,
                params=[RUN_ID],
            )
        }
        for verb in ("start", "pause", "resume", "stop", "rebalance")
    }
    paths: dict[str, Any] = {
        "/v1/runs": {
            "get": _op(
                "list runs", {"200": {"description": "runs", "content": _json(_ref("RunList"))}}
            ),
            "post": _op(
                "create (and by default start) a run from a named config or an inline spec",
                {"201": {"description": "created", "content": _json(_ref("RunView"))}},
                body="CreateRun",
                errors=(400, 404, 422),
                mutating=True,
            ),
        },
        "/v1/runs/{run_id}": {
            "get": _op("inspect a run", _RUN, errors=(404,), params=[RUN_ID]),
        },
        "/v1/runs/{run_id}/schemas": {
            "get": _op(
                "the Avro schema of each of a run's streams, by event type (a template's "
                "streams' are derived from the run's config)",
                {
                    "200": {
                        "description": "event type -> .avsc document",
                        "content": _json({"type": "object", "additionalProperties": _ANY}),
                    }
                },
                errors=(404,),
                params=[RUN_ID],
            )
        },
        **{f"/v1/runs/{{run_id}}/{verb}": op for verb, op in action.items()},
        "/v1/runs/{run_id}/streams/{stream}/rate": {
            "put": _op(
                "change a stream's rate profile live",
                _RUN,
                body="RateChange",
                errors=(400, 404, 409, 422),
                mutating=True,
                params=[RUN_ID, STREAM],
            )
        },
        "/v1/runs/{run_id}/chaos": {
            "put": _op(
                "change chaos live: the whole chain, or rates by step name",
                _RUN,
                body="ChaosChange",
                errors=(400, 404, 409, 422),
                mutating=True,
                params=[RUN_ID],
            )
        },
        "/v1/packs": {
            "get": _op(
                "installed packs, their streams and parameters",
                {
                    "200": {
                        "description": "packs",
                        "content": _json({"type": "array", "items": _ANY}),
                    }
                },
            )
        },
        "/v1/schemas": {
            "get": _op(
                "event types with a shipped schema (a template's streams: a run's schemas)",
                {
                    "200": {
                        "description": "event types",
                        "content": _json({"type": "array", "items": {"type": "string"}}),
                    }
                },
            )
        },
        "/v1/schemas/{event_type}": {
            "get": _op(
                "one Avro schema",
                {"200": {"description": "the .avsc document", "content": _json(_ANY)}},
                errors=(404,),
                params=[
                    {
                        "name": "event_type",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/v1/configs": {
            "get": _op(
                "named configs in the configs folder",
                {
                    "200": {
                        "description": "names",
                        "content": _json({"type": "array", "items": {"type": "string"}}),
                    }
                },
            )
        },
        "/v1/reload": {
            "post": _op(
                "re-read the named configs; apply them to their live runs",
                {
                    "200": {
                        "description": "what was applied",
                        "content": _json(_ref("ReloadResult")),
                    }
                },
                mutating=True,
            )
        },
        "/v1/events": {
            "get": {
                "summary": "server-sent events: per run, stream and sink events/s once a second",
                "responses": {
                    "200": {"description": "an event stream", "content": {"text/event-stream": {}}}
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "liveness",
                "responses": {"200": {"description": "alive", "content": _json(_ANY)}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "readiness (ledger open, not shutting down)",
                "responses": {
                    "200": {"description": "ready", "content": _json(_ANY)},
                    "503": {"description": "not ready", "content": _json(_ANY)},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of every run",
                "responses": {"200": {"description": "text format", "content": {"text/plain": {}}}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Data Factory admin API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
