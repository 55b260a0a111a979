"""``datafactory expect``: the command (see :mod:`datafactory.expect`)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import orjson

from datafactory import expect
from datafactory.batch.runner import BatchError, window
from datafactory.config import Config, ConfigError, load_config

EXIT_CONFIG = 2


def span(config: Config, start: str | None, end: str | None) -> tuple[int, int, bool]:
    """The events' window: a batch's ``--start``/``--end``, else the run's simulated window
    (start + duration). (start_us, end_us, whether a batch's)."""
    if (start is None) != (end is None):
        raise BatchError("--start and --end go together (a batch's window)")
    if start is not None and end is not None:
        return (*window(start, end), True)
    run = config.run
    if run.clock != "simulated" or run.start is None or run.duration is None:
        raise BatchError(
            "the run's window is its simulated clock's (run.clock: simulated, run.start, "
            "run.duration); for a batch, give --start and --end"
        )
    a = int(run.start.astimezone(dt.UTC).timestamp() * 1_000_000)
    return a, a + int(run.duration * 1_000_000), False


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        start_us, end_us, batch = span(config, args.start, args.end)
        shards = args.shards or (config.model.batch.shards if batch else config.run.shards)
        result = expect.answer(config, start_us, end_us, args.question, shards)
    except (ConfigError, BatchError, ValueError) as e:
        print(f"datafactory: {e}", file=sys.stderr)
        return EXIT_CONFIG
    files = expect.write(result, Path(args.out), args.format)
    summary = {
        "out": args.out,
        "questions": {name: t.num_rows for name, t in result.tables.items()},
        "events": result.events,
        "rows_aggregated": result.rows_in,
        "seconds": round(result.seconds, 3),
        "events_per_second": round(result.events / max(result.seconds, 1e-9)),
        "files": [str(f) for f in files],
    }
    print(orjson.dumps(summary).decode())
    return 0
