"""Deterministic identities: every event can be named from (run seed, stream, seq).

``event_id`` is a UUID-formatted string (version nibble 8, "custom", RFC 9562) whose 122
free bits come from splitmix64 over the run seed, a stable hash of the stream name and the
sequence number. The ledger, the chaos manifest and ``verify`` recompute it from the same
three numbers, so nothing has to be stored per event to name it later.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# each byte value's two hex digits, as a pair of uint8 (one lookup per byte, not per nibble)
_HEX_PAIRS = np.stack([_HEX[np.arange(256) >> 4], _HEX[np.arange(256) & 0x0F]], axis=1)


def stable_hash64(text: str) -> int:
    """A 64-bit hash of a name that is stable across processes and Python versions."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The splitmix64 finaliser, vectorised (uint64 arithmetic wraps, as intended)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def event_id_base(run_seed: int, stream: str) -> int:
    """The per-(run, stream) constant that event ids mix with each seq."""
    return (stable_hash64(stream) ^ (run_seed * 0x9E3779B97F4A7C15)) & (2**64 - 1)


def event_id_words(
    run_seed: int, stream: str, seq: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    base = np.uint64(event_id_base(run_seed, stream))
    with np.errstate(over="ignore"):
        hi = splitmix64(seq.astype(np.uint64) ^ base)
        lo = splitmix64(hi ^ np.uint64(0xD1B54A32D192ED03))
    return hi, lo


def event_ids(run_seed: int, stream: str, seq: npt.NDArray[np.int64]) -> npt.NDArray[np.bytes_]:
    """UUID strings (as ``S36`` bytes) for a run's events: by the compiled renderer (the
    same function its JSON and Avro records use) where it is built, else in numpy."""
    from datafactory.encoders import fast

    if fast.available() and len(seq):
        # an Avro string per row: its length (36, one varint byte), then the 36 characters
        base = event_id_base(run_seed, stream)
        seq64 = np.ascontiguousarray(seq, dtype=np.int64)
        payload, _ = fast.NATIVE.render(1, len(seq), [(fast.UUID, seq64, base)])
        rows = np.frombuffer(payload, dtype=np.uint8).reshape(len(seq), 37)
        return np.ascontiguousarray(rows[:, 1:]).view("S36").reshape(len(seq))
    return event_ids_numpy(run_seed, stream, seq)


def event_ids_numpy(
    run_seed: int, stream: str, seq: npt.NDArray[np.int64]
) -> npt.NDArray[np.bytes_]:
    hi, lo = event_id_words(run_seed, stream, seq)
    # version 8 in the high nibble of byte 6, variant 0b10 in the top bits of byte 8
    hi = (hi & np.uint64(0xFFFFFFFFFFFF0FFF)) | np.uint64(0x0000000000008000)
    lo = (lo & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)
    words = np.empty((len(seq), 2), dtype=">u8")
    words[:, 0] = hi
    words[:, 1] = lo
    raw = words.view(np.uint8).reshape(len(seq), 16)
    digits = _HEX_PAIRS[raw].reshape(len(seq), 32)
    out = np.empty((len(seq), 36), dtype=np.uint8)
    # the 8-4-4-4-12 groups, then the dashes
    out[:, 0:8] = digits[:, 0:8]
    out[:, 9:13] = digits[:, 8:12]
    out[:, 14:18] = digits[:, 12:16]
    out[:, 19:23] = digits[:, 16:20]
    out[:, 24:36] = digits[:, 20:32]
    out[:, [8, 13, 18, 23]] = ord("-")
    return out.view("S36").reshape(len(seq))


def event_id(run_seed: int, stream: str, seq: int) -> str:
    """The event id of one event (for tools that name a single record)."""
    return bytes(event_ids(run_seed, stream, np.array([seq], dtype=np.int64))[0]).decode()
