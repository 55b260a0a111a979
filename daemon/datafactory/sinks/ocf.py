"""Avro object container framing for pre-encoded records.

A deterministic header (the sync marker derives from the run), then each batch of
already-encoded records as one container block: count, size, bytes, sync.
"""

from __future__ import annotations

import hashlib

import orjson

from datafactory.encoders.varint import zigzag_varint
from datafactory.schema import EventSchema


def sync_marker(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()


def header(schema: EventSchema, sync: bytes) -> bytes:
    """Magic, metadata map (schema as shipped, codec null), sync marker.

    Written here rather than by fastavro because fastavro serialises the schema with a key
    order that changes between processes (hash seeds), and files must be byte-identical.
    """
    meta = {"avro.schema": orjson.dumps(schema.raw), "avro.codec": b"null"}
    out = bytearray(b"Obj\x01")
    out += zigzag_varint(len(meta))
    for k, v in meta.items():
        out += zigzag_varint(len(k)) + k.encode() + zigzag_varint(len(v)) + v
    out += zigzag_varint(0) + sync
    return bytes(out)


def block(count: int, payload: bytes | memoryview, sync: bytes) -> list[bytes | memoryview]:
    return [zigzag_varint(count) + zigzag_varint(len(payload)), payload, sync]
