"""A small, realistic data platform for the tests: the thing `verify` is pointed at.

It consumes a raw topic, validates every record against the shipped Avro schema (strict JSON:
exact field set, types, nullability, enum symbols, the ``range`` a field declares, a
plausible event time), and routes failures to a dead-letter topic with the original bytes,
key and headers plus an ``error`` header (as Kafka Connect's DLQ does), and valid records to
an accepted topic. It can be made faulty on purpose: ``lose_every`` silently drops clean
records, ``leak_every`` lets invalid records through; both decide from the record's bytes,
so duplicates get the same fate. It knows nothing of the chaos manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from datafactory.schema import EventSchema

_INT_BOUNDS = {"int": 2**31, "long": 2**63}
Span = tuple[float, float] | None  # when an event time is plausible (None: around now)


class Invalid(Exception):
    pass


def _check(value: Any, t: Any, f: dict[str, Any], path: str, span: Span = None) -> None:
    if isinstance(t, list):
        if value is None:
            if "null" not in t:
                raise Invalid(f"{path}: null")
            return
        rest = [x for x in t if x != "null"]
        _check(value, rest[0], f, path, span)
        return
    if value is None:
        raise Invalid(f"{path}: null in a required field")
    kind = t["type"] if isinstance(t, dict) else t
    logical = t.get("logicalType") if isinstance(t, dict) else None
    if logical == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"{path}: not a number")
    elif logical == "timestamp-micros":
        if not isinstance(value, str):
            raise Invalid(f"{path}: not a timestamp")
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise Invalid(f"{path}: bad timestamp") from None
        now = time.time()
        lo, hi = span or (now - 3600, now + 300)
        if not lo <= ts <= hi:
            raise Invalid(f"{path}: implausible event time")
    elif kind == "string":
        if not isinstance(value, str):
            raise Invalid(f"{path}: not a string")
    elif kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{path}: not an integer")
        if not -_INT_BOUNDS[kind] <= value < _INT_BOUNDS[kind]:
            raise Invalid(f"{path}: overflow")
    elif kind == "enum":
        if value not in t["symbols"]:
            raise Invalid(f"{path}: unknown symbol {value!r}")
    elif kind == "array":
        if not isinstance(value, list):
            raise Invalid(f"{path}: not a list")
        for i, item in enumerate(value):
            _check(item, t["items"], {}, f"{path}[{i}]", span)
        return
    elif kind == "record":
        _record(value, t, path, span)
        return
    rng = f.get("range")
    if rng is not None:
        lo, hi = rng.get("min"), rng.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise Invalid(f"{path}: {value} out of range")


def _record(value: Any, schema: dict[str, Any], path: str, span: Span = None) -> None:
    if not isinstance(value, dict):
        raise Invalid(f"{path}: not an object")
    names = [f["name"] for f in schema["fields"]]
    if set(value) != set(names):
        extra, missing = set(value) - set(names), set(names) - set(value)
        raise Invalid(f"{path}: fields differ (extra {sorted(extra)}, missing {sorted(missing)})")
    for f in schema["fields"]:
        _check(value[f["name"]], f["type"], f, f"{path}.{f['name']}", span)


def validate(value: bytes, schema: EventSchema, span: Span = None) -> str | None:
    """None if the record is valid, else why not (``span``: when event times are plausible,
    epoch seconds; default: around now)."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        return f"not JSON: {e}"
    try:
        _record(record, schema.raw, "$", span)
    except Invalid as e:
        return str(e)
    return None


def _fate(value: bytes, every: int | None, salt: bytes) -> bool:
    if not every:
        return False
    h = int.from_bytes(hashlib.blake2b(salt + value, digest_size=8).digest(), "little")
    return h % every == 0


@dataclass
class Stats:
    consumed: int = 0
    accepted: int = 0
    rejected: int = 0
    lost: set[int] = field(default_factory=set)  # seqs of clean records silently lost
    leaked: set[int] = field(default_factory=set)  # seqs of invalid records let through
    invalid: set[int] = field(default_factory=set)  # seqs the validator rejected
    reasons: dict[str, int] = field(default_factory=dict)


async def run_platform(
    bootstrap: str,
    raw: str,
    accepted: str,
    dlq: str,
    schema: EventSchema,
    *,
    lose_every: int | None = None,
    leak_every: int | None = None,
    quiet: float = 3.0,
) -> Stats:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        raw, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 << 20)
    await consumer.start()
    await producer.start()
    stats = Stats()
    pending = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            got = await consumer.getmany(timeout_ms=300, max_records=5000)
            for msgs in got.values():
                for m in msgs:
                    last = time.monotonic()
                    stats.consumed += 1
                    headers = list(m.headers or ())
                    seq = int(dict(headers)["seq"])
                    error = validate(m.value, schema)
                    if error is not None:
                        stats.invalid.add(seq)
                        short = error.split(":")[0] if error.startswith("not") else error[:40]
                        stats.reasons[short] = stats.reasons.get(short, 0) + 1
                        if _fate(m.value, leak_every, b"leak"):
                            stats.leaked.add(seq)
                            error = None
                    elif _fate(m.value, lose_every, b"lose"):
                        stats.lost.add(seq)
                        continue
                    if error is None:
                        stats.accepted += 1
                        pending.append(
                            await producer.send(accepted, m.value, key=m.key, headers=headers)
                        )
                    else:
                        stats.rejected += 1
                        pending.append(
                            await producer.send(
                                dlq,
                                m.value,
                                key=m.key,
                                headers=[*headers, ("error", error.encode()[:200])],
                            )
                        )
        await asyncio.gather(*pending)
    finally:
        await consumer.stop()
        await producer.stop()
    return stats
