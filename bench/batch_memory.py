"""Batch memory: one day of retail POS at 2,000 events/s (172.8 M rows, what
``config/default.yaml`` describes) to local Parquet, through the CLI; the peak RSS of the
process that did it, and rows/s. Memory must not grow with the day (goal: under 1.5 GB).

    python bench/batch_memory.py [--hours 24] [--rate 2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
run: {{seed: 11}}
packs:
  retail:
    params: {{stores: 50, customers: 100000, skus: 5000, expected_daily_transactions: {daily}}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}}}
sinks: {{none: {{type: stdout}}}}
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--json", default="artifacts/bench-batch-memory.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="df-bench-batch-mem-"))
    try:
        cfg = work / "pos.yaml"
        cfg.write_text(CONFIG.format(rate=args.rate, daily=round(args.rate * 86_400)))
        cmd = [sys.executable, "-m", "datafactory", "batch", str(cfg),
               "--start", "2024-03-01T00:00:00Z", "--end", f"2024-03-01T{args.hours:02d}:00:00Z"
               if args.hours < 24 else "2024-03-01",
               "--out", str(work / "out"), "--shards", "1", "--workers", "1", "--no-progress",
               "--ledger", f"sqlite:///{work}/ledger.db"]  # fmt: skip
        wall = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, timeout=4 * 3600)
        wall = time.perf_counter() - wall
        if done.returncode != 0:
            print(done.stderr.decode()[-3000:], file=sys.stderr)
            return 1
        summary = json.loads(done.stdout)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        files = sorted((work / "out").rglob("*.parquet"))
        out = {
            "hours": args.hours,
            "rate": args.rate,
            "rows": summary["rows"],
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "wall_seconds": round(wall, 1),
            "rows_per_second": round(summary["rows"] / wall),
            "peak_rss_mib": round(peak_mib),
        }
        print(
            f"batch, one {'day' if args.hours >= 24 else f'{args.hours} h'} of retail POS at "
            f"{args.rate:,.0f}/s to local Parquet (zstd), one worker: {out['rows']:,} rows in "
            f"{len(files)} files, {wall:,.0f} s"
        )
        print(f"  rows/s (wall, whole CLI run)          {out['rows_per_second']:12,}")
        print(f"  peak RSS (goal < 1,536 MiB)            {out['peak_rss_mib']:12,} MiB")
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
