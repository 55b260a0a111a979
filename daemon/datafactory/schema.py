"""Avro schemas shipped in ``schemas/``: the single source of truth for an event type's fields.

An event type is named ``<pack>.<stream>`` and lives in ``schemas/<pack>/<stream>.avsc``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One event type's schema, parsed once."""

    event_type: str
    raw: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes  # CRC-64-AVRO of the parsing canonical form, little endian (8 bytes)

    @property
    def fields(self) -> list[dict[str, Any]]:
        return list(self.raw["fields"])

    @property
    def single_object_header(self) -> bytes:
        """Avro single-object encoding marker + fingerprint (the 10-byte prefix)."""
        return b"\xc3\x01" + self.fingerprint


def make_schema(event_type: str, raw: dict[str, Any]) -> EventSchema:
    """An :class:`EventSchema` from a parsed ``.avsc`` document."""
    parsed = parse_schema(raw)
    canonical = to_parsing_canonical_form(parsed)
    # fastavro spells the fingerprint as the hex of its little-endian bytes, which is the
    # order single-object encoding puts on the wire
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return EventSchema(event_type, raw, parsed, canonical, fp)


@functools.cache
def load_schema(event_type: str) -> EventSchema:
    pack, _, stream = event_type.partition(".")
    if not pack or not stream:
        raise KeyError(f"event type must be <pack>.<stream>, got {event_type!r}")
    path = resources.files("datafactory.schemas").joinpath(pack, f"{stream}.avsc")
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise KeyError(
            f"no schema for event type {event_type!r} (looked for {pack}/{stream}.avsc)"
        ) from None
    return make_schema(event_type, raw)


def list_schemas() -> list[str]:
    root = resources.files("datafactory.schemas")
    out = []
    for pack in root.iterdir():
        if pack.is_dir() and not pack.name.startswith("_"):
            out += [
                f"{pack.name}.{f.name[:-5]}" for f in pack.iterdir() if f.name.endswith(".avsc")
            ]
    return sorted(out)
