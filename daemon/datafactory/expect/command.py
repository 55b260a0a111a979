"""``datafactory expect``: the command (see :mod:`datafactory.expect`)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path

import orjson

from datafactory.batch.runner import BatchError, window
from datafactory.config import Config, ConfigError, load_config
from datafactory.expect import run as expect
from datafactory.verify.reconcile import Truth

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


def truth_of(config: Config, manifest: str | None, batch: bool) -> Truth | None:
    """The run's chaos manifest (None: no chaos; a batch has none)."""
    if batch or (not config.chaos and manifest is None):
        return None
    from datafactory.verify import load_truth, manifest_uri

    uri = manifest or manifest_uri(config)
    return asyncio.run(load_truth(uri, config.run.name, quiet=1.0))


def run(args: argparse.Namespace) -> int:
    from datafactory.verify import VerifyError

    try:
        config = load_config(args.config)
        start_us, end_us, batch = span(config, args.start, args.end)
        shards = args.shards or (config.model.batch.shards if batch else config.run.shards)
        if not 1 <= shards <= 4096:
            raise ValueError(f"--shards {shards}: 1 to 4096, as the run or batch was split")
        workers = config.model.batch.workers if args.workers is None else args.workers
        if not 1 <= workers <= 1024:
            raise ValueError(f"--workers {workers}: 1 to 1024 processes")
        truth = truth_of(config, args.manifest, batch)
        policy = None
        if args.watermark_lag is not None or args.allowed_lateness is not None:
            lag, allowed = args.watermark_lag or 0.0, args.allowed_lateness or 0.0
            if lag < 0 or allowed < 0:
                raise ValueError("--watermark-lag and --allowed-lateness are seconds, >= 0")
            policy = expect.Lateness(int(lag * 1e6), int(allowed * 1e6))
        result = expect.answer(
            config, start_us, end_us, args.question, shards, truth, policy, workers
        )
    except (ConfigError, BatchError, ValueError, VerifyError) as e:
        print(f"datafactory: {e}", file=sys.stderr)
        return EXIT_CONFIG
    out = Path(args.out)
    files = expect.write(result, out, args.format)
    emits = args.emit or []
    if "dbt" in emits:
        from datafactory.expect import emit_dbt

        files += emit_dbt.write(result, out / "dbt")
    if "soda" in emits:
        from datafactory.expect import emit_soda

        files += emit_soda.write(config, result, end_us, out / "soda")
    summary = {
        "out": args.out,
        "questions": {name: t.num_rows for name, t in result.tables.items()},
        "chaos": truth is not None,
        "lateness": None
        if policy is None
        else {
            "watermark_lag_s": policy.lag_us / 1e6,
            "allowed_lateness_s": policy.allowed_us / 1e6,
        },
        "events": result.events,
        "workers": workers,
        "streams": {s: {"made": t.made, "kept": t.kept} for s, t in result.streams.items()},
        "rows_aggregated": result.rows_in,
        "seconds": round(result.seconds, 3),
        "events_per_second": round(result.events / max(result.seconds, 1e-9)),
        "files": [str(f) for f in files],
    }
    print(orjson.dumps(summary).decode())
    return 0
