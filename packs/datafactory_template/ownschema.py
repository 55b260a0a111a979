"""A user's own Avro schema for a template stream, checked against the one derived from the
template: the same fields, of the same types (record names, namespaces and docs aside; an
enum of the user's stands for a string), so what the template makes is what their consumers
expect.

``avsc:`` is the schema inline (a mapping), or a file named relative to the scenario file's
folder and inside it (a scenario sent to the API as text names no files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from datafactory import yamltext

ENVELOPE = ("event_id", "event_time")


def load(spec: dict[str, Any] | str, base_dir: Path | None) -> dict[str, Any]:
    """The schema (ValueError saying why not)."""
    if isinstance(spec, dict):
        raw = spec
    else:
        try:
            _, data = yamltext.read_beside(spec, base_dir, "a schema file")
        except yamltext.YamlError as e:
            raise ValueError(str(e)) from None
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"{spec!r} is not JSON: {e}") from None
    if (
        not isinstance(raw, dict)
        or raw.get("type") != "record"
        or not isinstance(raw.get("fields"), list)
    ):
        raise ValueError("an .avsc of a record (type: record, with fields)")
    return raw


def differences(own: dict[str, Any], derived: dict[str, Any]) -> list[str]:
    """How ``derived`` differs from ``own`` (empty: it matches)."""
    mine = {f["name"]: f["type"] for f in own["fields"] if isinstance(f, dict) and "name" in f}
    made = {f["name"]: f["type"] for f in derived["fields"]}
    out = []
    for name, t in mine.items():
        if name not in made:
            out.append(f"{name}: in your schema, not in the template")
        elif _shape(t) != _shape(made[name]):
            out.append(f"{name}: yours is {_text(t)}, the template makes {_text(made[name])}")
    out += [f"{n}: made by the template, not in your schema" for n in made
            if n not in mine and n not in ENVELOPE]  # fmt: skip
    return out


def _shape(t: Any) -> Any:
    if isinstance(t, str):
        return t
    if isinstance(t, list):
        return tuple(_shape(x) for x in t)
    if not isinstance(t, dict):
        return repr(t)
    kind, logical = t.get("type"), t.get("logicalType")
    if kind == "record":
        return (
            "record",
            tuple((f.get("name"), _shape(f.get("type"))) for f in t.get("fields", [])),
        )
    if kind == "array":
        return ("array", _shape(t.get("items")))
    if kind == "enum":
        return "string"  # its symbols are the template's choice values (not compared)
    if logical == "decimal":
        return ("decimal", t.get("scale", 0))
    if logical == "uuid":
        return "string"
    if logical:
        return (_shape(kind), logical)
    return _shape(kind)


def _text(t: Any) -> str:
    return orjson.dumps(t).decode()[:120]
