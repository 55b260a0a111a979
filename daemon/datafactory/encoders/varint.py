"""The zigzag base-128 varint that Avro longs and Kafka record fields share."""

from __future__ import annotations


def zigzag_varint(n: int) -> bytes:
    """Zigzag-encode a signed 64-bit int, then write it 7 bits at a time, low first."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)
