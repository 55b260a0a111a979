"""Avro object container framing for pre-encoded records.

The header comes from fastavro (with a sync marker we choose, so files are deterministic);
each batch of already-encoded records becomes one container block: count, size, bytes, sync.
"""

from __future__ import annotations

import hashlib
import io

from fastavro import writer

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
    buf = io.BytesIO()
    writer(buf, schema.parsed, [], sync_marker=sync)
    return buf.getvalue()


def block(count: int, payload: bytes | memoryview, sync: bytes) -> list[bytes | memoryview]:
    return [_long(count) + _long(len(payload)), payload, sync]
