"""Reconciliation: what was generated, what chaos did on purpose, what arrived, and what
the platform accepted or rejected.

Every message is named by (stream, seq): from Kafka headers when present, else by parsing it
(``event_id`` -> seq, the ids are recomputed from the run seed), else by the digest the
manifest recorded for a byte-level fault. A message none of these name is *unidentified*.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from datafactory.chaos.chain import digest
from datafactory.engine.identity import event_ids
from datafactory.schema import EventSchema
from datafactory.verify.sources import Message

# steps whose faults a platform should reject; the others are transport behaviour
REJECTABLE = {
    "schema_drift",
    "corrupt_value",
    "corrupt_bytes",
    "poison_pill",
    "timestamp_skew",
    "oversize",
    "domain",  # a pack's own labelled errors (healthcare claims, IoT incidents)
}


@dataclass
class Truth:
    """The manifest, indexed."""

    run: str = ""
    seed: int | None = None
    released: dict[str, int] = field(default_factory=dict)  # per stream, all its parts
    # per stream: each part's first seq -> events it released (one part: 0 -> n; a sharded
    # run: one part per shard, each in its own seq space)
    parts: dict[str, dict[int, int]] = field(default_factory=dict)
    final: bool = False
    # (stream, seq) -> [(step, kind)]
    faults: dict[tuple[str, int], list[tuple[str, str]]] = field(default_factory=dict)
    duplicates: Counter[tuple[str, int]] = field(default_factory=Counter)
    # (stream, seq) -> how late chaos delivered it (``delay``), in ms
    delays: dict[tuple[str, int], int] = field(default_factory=dict)
    digests: dict[str, tuple[str, int]] = field(default_factory=dict)
    # (stream, sink) -> seqs that sink's full buffer shed (never sent there, on purpose)
    shed: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], run: str | None = None) -> Truth:
        t = cls()
        finals: set[tuple[str, int]] = set()
        for r in rows:
            if run is not None and r.get("run") != run:
                continue
            kind = r.get("type")
            if kind == "run":
                t.run = r["run"]
                t.seed = int(r["seed"])
                stream, n, first = r["stream"], int(r["released"]), int(r.get("first") or 0)
                part = t.parts.setdefault(stream, {})
                part[first] = max(part.get(first, 0), n)
                if r.get("final"):
                    finals.add((stream, first))
            elif kind == "fault":
                key = (r["stream"], int(r["seq"]))
                hit = (r["step"], r["kind"])
                lst = t.faults.setdefault(key, [])
                if hit not in lst:
                    lst.append(hit)
                detail = r.get("detail") or {}
                if isinstance(detail, str):
                    detail = orjson.loads(detail)
                if r["step"] == "duplicate":
                    t.duplicates[key] += int(detail.get("copies", 1))
                elif r["step"] == "delay":
                    t.delays[key] = int(detail.get("delay_ms", 0))
            elif kind == "shed":
                t.shed.setdefault((r["stream"], r["sink"]), set()).add(int(r["seq"]))
            elif kind == "rendered" and r.get("digest"):
                named = (r["stream"], int(r["seq"]))
                if t.digests.setdefault(r["digest"], named) != named:
                    t.ambiguous.add(r["digest"])  # two events, same bytes: names neither
        t.released = {s: sum(p.values()) for s, p in t.parts.items()}
        t.final = bool(finals) and finals == {(s, f) for s, p in t.parts.items() for f in p}
        return t

    def expected(self, stream: str) -> set[int]:
        """Every seq the stream released (over all its parts)."""
        out: set[int] = set()
        for first, n in self.parts.get(stream, {}).items():
            out.update(range(first, first + n))
        return out

    def seq_ranges(self, stream: str) -> list[np.ndarray[Any, Any]]:
        return [
            np.arange(first, first + n, dtype=np.int64)
            for first, n in sorted(self.parts.get(stream, {}).items())
        ]

    def seqs(self, stream: str, step: str) -> set[int]:
        return {
            q
            for (s, q), hits in self.faults.items()
            if s == stream and any(h[0] == step for h in hits)
        }

    def rejectable(self, stream: str) -> set[int]:
        return {
            q
            for (s, q), hits in self.faults.items()
            if s == stream and any(h[0] in REJECTABLE for h in hits)
        }


class Identifier:
    """Names messages: (stream, seq) or None."""

    def __init__(self, truth: Truth, schemas: dict[str, EventSchema]) -> None:
        assert truth.seed is not None
        self.truth = truth
        self.schemas = schemas
        self.by_id: dict[str, tuple[str, int]] = {}
        for stream in truth.parts:
            for seqs in truth.seq_ranges(stream):
                ids = event_ids(truth.seed, stream, seqs)
                self.by_id.update(
                    zip(
                        (b.decode() for b in ids.tolist()),
                        ((stream, i) for i in seqs.tolist()),
                        strict=True,
                    )
                )
        self.by_fp = {s.fingerprint: s for s in schemas.values()}
        self.how: Counter[str] = Counter()

    def __call__(self, m: Message, stream_hint: str | None = None) -> tuple[str, int] | None:
        h = m.headers
        if "seq" in h and "event_type" in h:
            try:
                self.how["header"] += 1
                return h["event_type"].decode(), int(h["seq"])
            except (ValueError, UnicodeDecodeError):
                pass
        rec = m.record
        if rec is None and m.value is not None:
            rec = self._parse(m.value)
        if isinstance(rec, dict):
            found = self.by_id.get(str(rec.get("event_id")))
            if found is not None:
                self.how["parsed"] += 1
                return found
        if m.value is not None:
            found = self._by_digest(digest(m.value, "avro"))
            if found is None and m.value.endswith(b"\n"):  # a JSON line sent with its newline
                found = self._by_digest(digest(m.value, "json"))
            if found is not None:
                self.how["digest"] += 1
                return found
        self.how["unidentified"] += 1
        return None

    def _by_digest(self, d: str) -> tuple[str, int] | None:
        return self.truth.digests.get(d) if d not in self.truth.ambiguous else None

    def _parse(self, value: bytes) -> Any:
        if value[:2] == b"\xc3\x01":
            schema = self.by_fp.get(value[2:10])
            if schema is None:
                return None
            from fastavro import schemaless_reader

            try:
                return schemaless_reader(io.BytesIO(value[10:]), schema.parsed, None)
            except Exception:
                return None
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None


@dataclass
class Seen:
    """Where each (stream, seq) was seen and how often, plus order breaks."""

    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    unidentified: int = 0
    out_of_order: int = 0
    messages: int = 0

    @classmethod
    def of(cls, messages: list[Message], ident: Identifier) -> Seen:
        s = cls()
        prev: dict[tuple[str, str], int] = defaultdict(lambda: -1)
        for m in messages:
            s.messages += 1
            key = ident(m)
            if key is None:
                s.unidentified += 1
                continue
            s.counts[key] += 1
            lane = (m.where, key[0])  # order holds within a partition, shard or file
            if key[1] < prev[lane]:
                s.out_of_order += 1  # arrived right after an event generated later
            prev[lane] = key[1]
        return s

    def streams(self, stream: str) -> set[int]:
        return {q for (s, q) in self.counts if s == stream}


def transport(
    truth: Truth, stream: str, seen: Seen, limited: bool, sink: str | None = None
) -> dict[str, Any]:
    """What arrived at one sink for one stream, against what should have."""
    n = truth.released.get(stream, 0)
    released = truth.expected(stream)
    got = seen.streams(stream)
    dropped = truth.seqs(stream, "drop")
    oversize = truth.seqs(stream, "oversize") if limited else set()
    shed = truth.shed.get((stream, sink), set()) if sink is not None else set()
    expected = released - dropped
    missing = expected - got - oversize - shed
    counts = {q: c for (s, q), c in seen.counts.items() if s == stream}
    dup_beyond = sum(
        max(0, c - 1 - truth.duplicates.get((stream, q), 0)) for q, c in counts.items()
    )
    dup_intended = sum(c - 1 for c in counts.values() if c > 1) - dup_beyond
    return {
        "released": n,
        "delivered": len(got & released),
        "messages": sum(counts.values()),
        "dropped_intentionally": len(dropped),
        "rejected_oversize_intentionally": len(oversize - got),
        "shed": len(shed - got),
        "missing": len(missing),
        "missing_sample": sorted(missing)[:10],
        "duplicated_intentionally": dup_intended,
        "duplicated_beyond": dup_beyond,
        "dropped_but_arrived": len(dropped & got),
        "delayed_intentionally": len(truth.seqs(stream, "delay")),
        "out_of_order": seen.out_of_order,
    }


def platform(
    truth: Truth,
    stream: str,
    delivered: set[int] | None,
    accepted: Seen | None,
    dlq: Seen | None,
) -> dict[str, Any]:
    """The platform's verdicts: DLQ precision and recall per fault, and what it lost."""
    released = truth.expected(stream)
    acc = accepted.streams(stream) if accepted is not None else set()
    rej = dlq.streams(stream) if dlq is not None else set()
    dropped = truth.seqs(stream, "drop")
    oversize = truth.seqs(stream, "oversize")
    # what reached the platform: what arrived, or (without a transport read) all but drops
    reached = delivered if delivered is not None else released - dropped - oversize
    faulty = truth.rejectable(stream)
    by_kind: dict[str, dict[str, Any]] = {}
    for (s, q), hits in truth.faults.items():
        if s != stream or q not in reached:
            continue
        for step, kind in hits:
            if step not in REJECTABLE:
                continue
            for label in (step, f"{step}.{kind}"):
                row = by_kind.setdefault(label, {"injected": 0, "caught": 0, "passed": 0})
                row["injected"] += 1
                row["caught"] += q in rej
                row["passed"] += q in acc
    for row in by_kind.values():
        row["recall"] = row["caught"] / row["injected"] if row["injected"] else None
    in_scope = rej & released
    true_pos = in_scope & faulty
    clean_reached = reached - faulty
    lost = reached - acc - rej
    accounted = acc | rej | dropped | (oversize - reached)
    return {
        "accepted": len(acc),
        "dlq": len(rej),
        "faulty_reached": len(reached & faulty),
        "caught": len(true_pos),
        "recall": len(true_pos) / len(reached & faulty) if reached & faulty else None,
        "false_positives": len(in_scope - faulty),
        "precision": len(true_pos) / len(in_scope) if in_scope else None,
        "faulty_accepted": len(acc & faulty),
        "clean_reached": len(clean_reached),
        "clean_lost": len(lost - faulty),
        "faulty_lost": len(lost & faulty),
        "lost_sample": sorted(lost)[:10],
        "unaccounted": len(released - accounted),
        "by_fault": dict(sorted(by_kind.items())),
    }
