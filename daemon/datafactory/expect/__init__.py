"""``datafactory expect CONFIG``: the answers a platform's numbers must match.

The run's (or batch's) events are made again as the business produced them, before chaos
(the same config and seed make the same events: batch mode's simulation, shard by shard as
the run or batch was split), and each question its packs declare
(:mod:`datafactory.expect.questions`) is answered over them a block at a time
(:mod:`datafactory.expect.answers`). One table per question, as Parquet or JSON lines, each
with a schema file beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from datafactory.config import Config
from datafactory.expect.answers import Answer
from datafactory.expect.questions import Measure, Plan, Question, plan

__all__ = ["Measure", "Question", "answer", "plans", "write"]


@dataclass
class Answers:
    tables: dict[str, pa.Table]
    plans: dict[str, Plan]
    rows_in: int  # events (or items) aggregated
    events: int  # events made
    seconds: float


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


def answer(
    config: Config, start_us: int, end_us: int, only: list[str] | None = None, shards: int = 1
) -> Answers:
    """Every question answered over ``[start_us, end_us)`` of the config's events (made in
    ``shards`` parts, as the run or batch that made them was)."""
    from datafactory.batch.simulate import ShardSimulation
    from datafactory.pack import Shard

    t0 = time.monotonic()
    chosen = plans(config, only)
    answers = {name: Answer(p) for name, p in chosen.items()}
    by_stream: dict[str, list[Answer]] = {}
    for name, p in chosen.items():
        by_stream.setdefault(_event_type(config, p.question), []).append(answers[name])
    events = 0
    for index in range(shards):
        sim = ShardSimulation(config, Shard(index, shards), start_us, end_us)
        for chunk in sim.chunks():
            for block in chunk.blocks:
                events += len(block)
                for a in by_stream.get(block.stream, ()):
                    a.add(block)
    return Answers(
        {name: a.table() for name, a in answers.items()},
        chosen,
        sum(a.rows for a in answers.values()),
        events,
        time.monotonic() - t0,
    )


def _event_type(config: Config, q: Question) -> str:
    return next(p.event_type for p in config.streams if p.stream == q.stream)


def write(result: Answers, out: Path, fmt: str) -> list[Path]:
    """One file per question (``<question>.parquet`` or ``.jsonl``) and its schema
    (``<question>.schema.json``: columns, types, the question)."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, table in result.tables.items():
        q = result.plans[name].question
        path = out / f"{name}.{'parquet' if fmt == 'parquet' else 'jsonl'}"
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            path.write_bytes(json_lines(table))
        doc = {
            "question": name,
            "doc": q.doc,
            "stream": q.stream,
            "window_seconds": q.window,
            "by": list(q.by),
            "measures": [{"name": m.name, "op": m.op, "field": m.field} for m in q.measures],
            "where": {k: list(v) for k, v in q.where},
            "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            "rows": table.num_rows,
        }
        schema = out / f"{name}.schema.json"
        schema.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        files += [path, schema]
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
