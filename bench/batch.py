"""Batch mode throughput: retail history to local Parquet, beside pyarrow writing the same rows
from tables already in memory (same run, same settings): rows per CPU-second (one worker,
one shard), and on the whole machine (two shards in two worker processes, against pyarrow
writing with two threads), wall clock.

    python bench/batch.py [--days 14] [--rate 1.0] [--compression zstd]

Rows are all five retail streams' (sales, stock movements, returns, prices, customers). The
anchor reads the batch's own files back into memory first, so both sides write the same
rows with the same types, row groups and codec; only the anchor skips simulating, converting
and hashing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from datafactory.batch.runner import prepare, run_batch
from datafactory.batch.simulate import ShardSimulation
from datafactory.pack import Shard

CONFIG = """
run: {{seed: 5}}
packs:
  retail:
    params: {{stores: 50, customers: 100000, skus: 5000, expected_daily_transactions: {daily}}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}}}
      inventory_movement: {{}}
      return: {{}}
      price_change: {{}}
      customer_event: {{}}
sinks: {{none: {{type: stdout}}}}
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--rate", type=float, default=1.0, help="POS transactions per second")
    ap.add_argument("--compression", default="zstd")
    ap.add_argument("--json", default="artifacts/bench-batch.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="df-bench-batch-"))
    try:
        cfg = work / "retail.yaml"
        cfg.write_text(CONFIG.format(rate=args.rate, daily=round(args.rate * 86_400)))
        end = f"2024-03-{args.days:02d}" if args.days <= 31 else None
        assert end, "--days: at most 31"
        spec = {"out": str(work / "out"), "shards": 1, "workers": 1,
                "compression": args.compression}  # fmt: skip
        job, config = prepare(str(cfg), "2024-03-01", end, spec,
                              ledger_url=f"sqlite:///{work}/ledger.db")  # fmt: skip

        # simulation alone (no conversion, no files)
        cpu = time.process_time()
        sim = ShardSimulation(config, Shard(), job.start_us, job.end_us)
        sim_rows = sum(len(b) for c in sim.chunks() for b in c.blocks)
        sim_cpu = time.process_time() - cpu

        cpu, wall = time.process_time(), time.perf_counter()
        summary = run_batch(job, config)
        ours_cpu, ours_wall = time.process_time() - cpu, time.perf_counter() - wall
        rows = summary["rows"]
        assert rows == sim_rows, (rows, sim_rows)

        # the anchor: the same rows, already tables, written by pyarrow with the same settings
        files = [p for p in (work / "out").rglob("*.parquet")]
        tables = [pq.read_table(p) for p in files]
        anchor_dir = work / "anchor"
        anchor_dir.mkdir()

        def write(i: int) -> None:
            pq.write_table(tables[i], anchor_dir / f"{i}.parquet", compression=args.compression,
                           row_group_size=1_000_000, store_schema=False)  # fmt: skip

        cpu = time.process_time()
        for i in range(len(tables)):
            write(i)
        anchor_cpu = time.process_time() - cpu
        anchor_rows = sum(t.num_rows for t in tables)
        assert anchor_rows == rows

        # the whole machine: two shards in two workers; pyarrow with two threads
        spec2 = {**spec, "out": str(work / "out2"), "shards": 2, "workers": 2}
        job2, config2 = prepare(str(cfg), "2024-03-01", end, spec2,
                                ledger_url=f"sqlite:///{work}/ledger2.db")  # fmt: skip
        wall2 = time.perf_counter()
        rows2 = run_batch(job2, config2)["rows"]
        wall2 = time.perf_counter() - wall2
        shutil.rmtree(anchor_dir)
        anchor_dir.mkdir()
        from concurrent.futures import ThreadPoolExecutor

        order = sorted(range(len(tables)), key=lambda i: -tables[i].num_rows)
        anchor_wall = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(write, order))
        anchor_wall = time.perf_counter() - anchor_wall

        ours = rows / ours_cpu
        anchor = anchor_rows / anchor_cpu
        ours2, anchor2 = rows2 / wall2, anchor_rows / anchor_wall
        out = {
            "rows": rows,
            "files": len(files),
            "bytes": summary["bytes"],
            "days": args.days,
            "compression": args.compression,
            "ours_rows_per_cpu_second": ours,
            "ours_wall_seconds": ours_wall,
            "simulate_only_rows_per_cpu_second": sim_rows / sim_cpu,
            "pyarrow_prebuilt_rows_per_cpu_second": anchor,
            "ratio_to_pyarrow_prebuilt": ours / anchor,
            "machine_ours_rows_per_second": ours2,
            "machine_pyarrow_prebuilt_rows_per_second": anchor2,
            "machine_ratio": ours2 / anchor2,
        }
        print(
            f"batch, retail (5 streams) to local Parquet ({args.compression}), one core: "
            f"{rows:,} rows in {len(files):,} files"
        )
        print(f"  datafactory batch (simulate + convert + write + hash + ledger) "
              f"{ours:12,.0f} rows/s per core")  # fmt: skip
        print(f"  of which simulating alone runs at                            "
              f"{sim_rows / sim_cpu:12,.0f} rows/s")  # fmt: skip
        print(f"  pyarrow writing the same rows from prebuilt tables           "
              f"{anchor:12,.0f} rows/s")  # fmt: skip
        print(f"  ratio, per core                                              "
              f"{ours / anchor:12.2f}")  # fmt: skip
        print(f"  whole machine (2 cores), wall clock: datafactory batch, 2 workers "
              f"{ours2:12,.0f} rows/s")  # fmt: skip
        print(f"  pyarrow writing the same rows from prebuilt tables, 2 threads  "
              f"{anchor2:12,.0f} rows/s")  # fmt: skip
        print(f"  ratio, whole machine (goal >= 0.8)                           "
              f"{ours2 / anchor2:12.2f}")  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
