"""Avro object container framing for pre-encoded records.

A deterministic header (the sync marker derives from the run), then each batch of
already-encoded records as one container block: count, size, bytes, sync.
"""

from __future__ import annotations

import hashlib

import orjson

from datafactory.schema import EventSchema


def _long(n: int) -> bytes:
    """Avro long: zigzag, then base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def sync_marker(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()


def header(schema: EventSchema, sync: bytes) -> bytes:
    """Magic, metadata map (schema as shipped, codec null), sync marker.

    Written here rather than by fastavro because fastavro serialises the schema with a key
    order that changes between processes (hash seeds), and files must be byte-identical.
    """
    meta = {"avro.schema": orjson.dumps(schema.raw), "avro.codec": b"null"}
    out = bytearray(b"Obj\x01")
    out += _long(len(meta))
    for k, v in meta.items():
        out += _long(len(k)) + k.encode() + _long(len(v)) + v
    out += _long(0) + sync
    return bytes(out)


def block(count: int, payload: bytes | memoryview, sync: bytes) -> list[bytes | memoryview]:
    return [_long(count) + _long(len(payload)), payload, sync]
