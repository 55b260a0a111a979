"""The answers a platform's numbers must match, over a run's or a batch's events.

The run's (or batch's) events are made again as the business produced them, before chaos
(the same config and seed make the same events: batch mode's simulation, shard by shard as
the run or batch was split), and each question its packs declare
(:mod:`datafactory.expect.questions`) is answered over them a block at a time
(:mod:`datafactory.expect.answers`). One table per question, as Parquet or JSON lines, each
with a schema file beside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from datafactory.config import Config
from datafactory.engine.blocks import RecordBlock, concat
from datafactory.engine.identity import event_ids
from datafactory.expect.answers import Answer
from datafactory.expect.fates import FATES, LAGGING, LATE, Fates
from datafactory.expect.questions import Measure, Plan, Question, plan
from datafactory.verify.reconcile import Truth

__all__ = ["Lateness", "Measure", "Question", "answer", "plans", "write"]

GATHER = 65_536  # a stream's rows gathered into one block before they are answered


@dataclass
class Answers:
    tables: dict[str, pa.Table]  # what a correct platform reports (all of it, without chaos)
    plans: dict[str, Plan]
    rows_in: int  # events (or items) aggregated
    events: int  # events made
    seconds: float
    # with chaos (a manifest): the answer over every event the business made, and each
    # event that a fate befell with what it contributes (``fault``: dropped, rejected,
    # duplicated: a row per extra copy)
    business: dict[str, pa.Table] = field(default_factory=dict)
    faults: dict[str, pa.Table] = field(default_factory=dict)
    # per stream (``retail.pos_transaction``): what a correct platform holds of it
    streams: dict[str, Tally] = field(default_factory=dict)


@dataclass
class Tally:
    """A stream's events: made by the business, and kept by a correct platform (each once:
    not those chaos dropped or it must reject); the last kept one's event time (µs)."""

    made: int = 0
    kept: int = 0
    last_us: int | None = None

    def add(self, block: RecordBlock, split: dict[str, Any] | None) -> None:
        kept = block.event_time if split is None else block.event_time[split["kept"]]
        self.made += len(block)
        self.kept += len(kept)
        if len(kept):
            last = int(kept.max())
            self.last_us = last if self.last_us is None else max(self.last_us, last)

    def merge(self, other: Tally) -> None:
        self.made += other.made
        self.kept += other.kept
        if other.last_us is not None:
            mine = self.last_us
            self.last_us = other.last_us if mine is None else max(mine, other.last_us)


def plans(config: Config, only: list[str] | None = None) -> dict[str, Plan]:
    """The questions of the config's packs about its enabled streams, checked against their
    schemas; ``only``: these (ValueError naming what there is when one is not)."""
    from datafactory.pack import registered_packs

    packs = registered_packs()
    out: dict[str, Plan] = {}
    enabled = {(p.pack, p.stream): p for p in config.streams}
    for pack in dict.fromkeys(p.pack for p in config.streams):
        for q in packs[pack].questions(config.pack_params[pack]):
            stream = enabled.get((pack, q.stream))
            if stream is not None:
                out[q.name] = plan(q, stream.schema.fields)
    if only:
        missing = [n for n in only if n not in out]
        if missing:
            raise ValueError(
                f"no question {', '.join(map(repr, missing))} about this config's streams; "
                f"questions: {', '.join(out) or 'none'}"
            )
        out = {n: out[n] for n in only}
    return out


@dataclass(frozen=True)
class Lateness:
    """A streaming job's policy: its watermark trails the latest event time it has seen by
    ``lag_us``; a window closes when the watermark passes its end, and takes events for
    ``allowed_us`` more (updating its answer); later ones are dropped."""

    lag_us: int
    allowed_us: int


class _Asked:
    """One question's answers over a run's events: what a correct platform reports, and
    (with chaos or a lateness policy) the business's whole answer and each fate's events:
    chaos's (``fates.FATES``), and under the policy ``late`` (dropped by it) and ``lagging``
    (after the watermark, within the allowed lateness: counted)."""

    def __init__(self, p: Plan, chaos: bool, policy: Lateness | None, end_us: int) -> None:
        self.plan, self.policy = p, policy
        self.expected = Answer(p, end_us=end_us)
        named = (*(FATES if chaos else ()), *((LATE, LAGGING) if policy else ()))
        self.business = Answer(p, end_us=end_us) if named else None
        self.fates = {f: Answer(p, per_event=True) for f in named}

    def add(self, block: RecordBlock, split: dict[str, Any] | None) -> None:
        if self.business is None:
            self.expected.add(block)
            return
        self.business.add(block)
        rows = split or {"kept": np.arange(len(block))}
        kept = rows["kept"]
        if self.policy is not None:
            late, lagging = self._late(block, rows.get("delay_us"))
            rows = {**rows, LATE: kept[late[kept]], LAGGING: kept[lagging[kept]]}
            kept = kept[~late[kept]]
        self.expected.add(block.take(kept))
        for f, answer in self.fates.items():
            if len(rows.get(f, ())):
                answer.add(block.take(rows[f]))

    def fold(self) -> None:
        """Each answer's partials folded into one (a shard's, before it is merged)."""
        for a in self._answers():
            a.fold()

    def merge(self, other: _Asked) -> None:
        """Another shard's answers to the same question added to these."""
        for a, b in zip(self._answers(), other._answers(), strict=True):
            a.merge(b)

    def _answers(self) -> list[Answer]:
        return [self.expected, *([self.business] if self.business else []),
                *self.fates.values()]  # fmt: skip

    def _late(self, block: RecordBlock, delay: Any) -> tuple[Any, Any]:
        """Rows the policy drops, and rows that came after the watermark but are counted."""
        assert self.policy is not None
        t = block.event_time
        arrival = t.copy()
        field_name = self.plan.question.arrival
        if field_name is not None:
            sent = np.asarray(block.columns[field_name], dtype=np.int64)
            nulls = block.nulls.get(field_name)
            arrival = np.where(nulls, t, sent) if nulls is not None else sent.copy()
        if delay is not None:
            arrival = arrival + delay
        w = self.expected.window_us
        end = (t // w + 1) * w
        seen = arrival - self.policy.lag_us  # the watermark when it arrives (events flow on)
        late = seen >= end + self.policy.allowed_us
        return late, (seen >= end) & ~late

    def faults(self, stream: str, seed: int) -> pa.Table:
        parts = []
        for f, answer in self.fates.items():
            t = answer.table()
            ids = event_ids(seed, stream, t["seq"].to_numpy().astype(np.int64))
            t = t.append_column("fault", pa.array([f] * t.num_rows, pa.string()))
            names = pa.array([b.decode() for b in ids.tolist()], pa.string())
            parts.append(t.append_column("event_id", names))
        return pa.concat_tables(parts, promote_options="permissive")


def answer(
    config: Config,
    start_us: int,
    end_us: int,
    only: list[str] | None = None,
    shards: int = 1,
    truth: Truth | None = None,
    policy: Lateness | None = None,
    workers: int = 1,
) -> Answers:
    """Every question answered over ``[start_us, end_us)`` of the config's events (made in
    ``shards`` parts, as the run or batch that made them was). ``truth``: the run's chaos
    manifest (what a correct platform counts leaves out what chaos dropped and what it
    must reject, and counts duplicates once); ``policy``: the platform's lateness policy
    (what arrives too late is left out too). ``workers``: processes the shards are answered
    in (as batch mode makes them); each shard's partial answers are merged in shard order,
    so the answer is the same whatever the workers."""
    t0 = time.monotonic()
    chosen = plans(config, only)  # checked here, before any worker starts
    job = _Job(config, start_us, end_us, only, shards, truth, policy)
    if workers > 1 and shards > 1:  # (as batch mode's shards are made)
        from datafactory.batch.processes import in_processes

        calls = [(job, index) for index in range(shards)]
        whole = _merged(in_processes(_answer_shard, calls, min(workers, shards)))
    else:
        whole = _merged(_answer_shard(job, index) for index in range(shards))
    asked, streams = whole.asked, {n: _event_type(config, p.question) for n, p in chosen.items()}
    seed = config.run.seed
    return Answers(
        {name: a.expected.table() for name, a in asked.items()},
        chosen,
        sum(a.expected.rows for a in asked.values()),
        whole.events,
        time.monotonic() - t0,
        {n: a.business.table() for n, a in asked.items() if a.business is not None},
        {n: a.faults(streams[n], seed) for n, a in asked.items() if a.fates},
        whole.tallies,
    )


@dataclass(frozen=True)
class _Job:
    """What a worker needs to answer a shard (picklable)."""

    config: Config
    start_us: int
    end_us: int
    only: list[str] | None
    shards: int
    truth: Truth | None
    policy: Lateness | None


@dataclass
class _Part:
    """One shard's answers (each folded to one partial table), tallies and events made."""

    asked: dict[str, _Asked]
    tallies: dict[str, Tally]
    events: int = 0

    def merge(self, other: _Part) -> None:
        for name, a in self.asked.items():
            a.merge(other.asked[name])
        for stream, t in other.tallies.items():
            self.tallies.setdefault(stream, Tally()).merge(t)
        self.events += other.events


def _merged(parts: Iterable[_Part]) -> _Part:
    it = iter(parts)
    whole = next(it)
    for part in it:
        whole.merge(part)
    return whole


def _answer_shard(job: _Job, index: int) -> _Part:
    """One shard's events made again (batch mode's simulation) and answered."""
    from datafactory.batch.simulate import ShardSimulation
    from datafactory.pack import Shard

    config = job.config
    chosen = plans(config, job.only)
    fates = Fates(job.truth) if job.truth is not None else None
    asked = {n: _Asked(p, fates is not None, job.policy, job.end_us) for n, p in chosen.items()}
    by_stream: dict[str, list[_Asked]] = {}
    reads: dict[str, set[str]] = {}  # a stream's columns its questions read
    for name, p in chosen.items():
        stream = _event_type(config, p.question)
        by_stream.setdefault(stream, []).append(asked[name])
        arrival = () if p.question.arrival is None else (p.question.arrival,)
        reads.setdefault(stream, set()).update(p.tops, arrival)
    part = _Part(asked, {})

    def add(blocks: list[RecordBlock]) -> None:
        block = concat(blocks)
        blocks.clear()
        part.events += len(block)
        split = fates.split(block) if fates is not None else None
        part.tallies.setdefault(block.stream, Tally()).add(block, split)
        for a in by_stream.get(block.stream, ()):
            a.add(block, split)

    # a stream's blocks answered GATHER rows at a time: driven streams come in blocks of a
    # few hundred rows, and each block's columns cost a conversion per question
    gathered: dict[str, list[RecordBlock]] = {}
    rows: dict[str, int] = {}
    sim = ShardSimulation(config, Shard(index, job.shards), job.start_us, job.end_us)
    for chunk in sim.chunks():
        for block in chunk.blocks:
            block = _only(block, reads.get(block.stream, set()))  # (the rest is not gathered)
            gathered.setdefault(block.stream, []).append(block)
            rows[block.stream] = rows.get(block.stream, 0) + len(block)
            if rows[block.stream] >= GATHER:
                add(gathered[block.stream])
                rows[block.stream] = 0
    for blocks in gathered.values():
        if blocks:
            add(blocks)
    for a in asked.values():
        a.fold()
    return part


def _only(block: RecordBlock, columns: set[str]) -> RecordBlock:
    """The block with only these columns (and its seqs, times and keys)."""
    return RecordBlock(
        block.stream,
        block.seq,
        block.event_time,
        block.key,
        {k: c for k, c in block.columns.items() if k in columns},
        {k: m for k, m in block.nulls.items() if k in columns},
    )


def _event_type(config: Config, q: Question) -> str:
    return next(p.event_type for p in config.streams if p.stream == q.stream)


def write(result: Answers, out: Path, fmt: str) -> list[Path]:
    """Per question: its table (``<question>.parquet`` or ``.jsonl``) and schema
    (``<question>.schema.json``: columns, types, the question); with chaos, also the
    business's whole answer (``<question>.business.*``) and each event a fate befell
    (``<question>.faults.*``)."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    ext = "parquet" if fmt == "parquet" else "jsonl"
    for name, table in result.tables.items():
        q = result.plans[name].question
        tables = {"": table}
        if name in result.business:
            tables[".business"] = result.business[name]
            tables[".faults"] = result.faults[name]
        for suffix, t in tables.items():
            path = out / f"{name}{suffix}.{ext}"
            if fmt == "parquet":
                pq.write_table(t, path)
            else:
                path.write_bytes(json_lines(t))
            files.append(path)
        doc = {
            "question": name,
            "doc": q.doc,
            "stream": q.stream,
            "window_seconds": q.window,
            "by": list(q.by),
            "measures": [{"name": m.name, "op": m.op, "field": m.field} for m in q.measures],
            "where": {k: list(v) for k, v in q.where},
            "running": q.running,
            "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            "rows": table.num_rows,
            "chaos": name in result.business,
        }
        schema = out / f"{name}.schema.json"
        schema.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        files.append(schema)
    return files


def json_lines(table: pa.Table) -> bytes:
    """A table as JSON lines: decimals as exact numbers, times as RFC 3339 UTC."""

    def default(v: Any) -> Any:
        if isinstance(v, Decimal):
            return orjson.Fragment(str(v))
        raise TypeError

    opts = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
    return b"".join(
        orjson.dumps(r, default=default, option=opts) + b"\n" for r in table.to_pylist()
    )
