"""``expect --emit soda``: SodaCL checks of a platform's staged events tables, from the run and
its chaos manifest (``<out>/soda/<stream>.yml``, for Soda Core's ``soda scan``).

Per stream, on a table named as the stream (``pos_transaction``): as many rows as a correct
platform keeps (each event once; none that chaos dropped or that it must reject); no
duplicate and no missing ``event_id``; fresh to the run's end (the latest kept event's time,
to the second: a platform that lost the run's last minutes fails); and the schema's columns
all there. Freshness is measured against the variable ``RUN_END`` (the run's end, UTC), given
to the scan: ``soda scan -d <data source> -c configuration.yml -v RUN_END=... <stream>.yml``.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import orjson

from datafactory.config import Config
from datafactory.expect.run import Answers


def run_end(end_us: int) -> str:
    """The RUN_END variable: the run's end, UTC, as Soda reads it (ISO 8601, no zone)."""
    return dt.datetime.fromtimestamp(end_us / 1e6, dt.UTC).replace(tzinfo=None).isoformat()


def checks(config: Config, result: Answers, end_us: int) -> dict[str, str]:
    """Per stream, its checks file's text (YAML), named by the stream's table."""
    schemas = {p.event_type: p.schema for p in config.streams}
    out = {}
    for stream, tally in result.streams.items():
        table = stream.split(".", 1)[1]
        columns = [f["name"] for f in schemas[stream].fields]
        lines = [
            "# made by datafactory expect from the run and its chaos manifest: what a correct",
            f"# platform holds of {stream} (run {config.run.name!r}, seed {config.run.seed}):",
            f"# {tally.kept} events kept of {tally.made} made. Scan it with",
            f"# soda scan -d <data source> -c configuration.yml -v RUN_END={run_end(end_us)} "
            f"{table}.yml",
            f"checks for {table}:",
            f"  - row_count = {tally.kept}",
            "  - duplicate_count(event_id) = 0",
            "  - missing_count(event_id) = 0",
        ]
        if tally.last_us is not None:
            behind = max(1, math.ceil((end_us - tally.last_us) / 1e6))
            lines.append(f"  - freshness(event_time, RUN_END) < {behind + 1}s")
        lines += [
            "  - schema:",
            "      fail:",
            f"        when required column missing: {orjson.dumps(columns).decode()}",
        ]
        out[table] = "\n".join(lines) + "\n"
    return out


def write(config: Config, result: Answers, end_us: int, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for table, text in checks(config, result, end_us).items():
        path = out / f"{table}.yml"
        path.write_text(text)
        files.append(path)
    return files
