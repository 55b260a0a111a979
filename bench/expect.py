"""``expect`` against batch mode over the same month of retail history, in the same run.

The config: ``config/examples/retail-history.yaml`` at 5x its volume (100 stores, 200,000
customers, 50,000 sales a day; 4 shards), January 2024: about 7.6 M events. Both commands
run as a user runs them (the CLI, a fresh process each), with 1 and 2 worker processes:
batch writes Parquet (zstd) to a local folder; expect answers every retail question (the
four windowed ones, and stock on hand: a 9.3 M-row running total) and writes its tables.
Wall-clock seconds of each process; the ratio is batch's time over expect's (>= 1: expect
is at batch speed). The four windowed questions alone are timed too.

    python bench/expect.py [--days 31] [--rounds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "datafactory"]
WINDOWED = ["sales_by_store_hour", "sales_by_category_day", "returns_by_store_day",
            "customers_by_day"]  # fmt: skip


def config(tmp: Path) -> Path:
    text = (ROOT / "config/examples/retail-history.yaml").read_text()
    text = text.replace(
        "stores: 40, customers: 40000, skus: 3000, expected_daily_transactions: 10000",
        "stores: 100, customers: 200000, skus: 3000, expected_daily_transactions: 50000",
    ).replace("base: 0.116", "base: 0.58")
    assert "stores: 100" in text and "base: 0.58" in text, "retail-history.yaml changed"
    path = tmp / "month.yaml"
    path.write_text(text)
    return path


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*CLI, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=31)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = str(config(tmp))
        end = (dt.date(2024, 1, 1) + dt.timedelta(days=a.days - 1)).isoformat()
        span = ["--start", "2024-01-01", "--end", end]
        print(f"expect vs batch: retail history x5, {a.days} days from 2024-01-01, 4 shards")
        for workers in (1, 2):
            best: dict[str, float] = {}
            for r in range(a.rounds):
                out = tmp / f"r{r}"
                runs = {
                    "batch": ["batch", cfg, *span, "--workers", str(workers), "--no-progress",
                              "--out", str(out / "batch"), "--ledger",
                              f"sqlite:///{out}/ledger.db"],
                    "expect": ["expect", cfg, *span, "--workers", str(workers), "--out",
                               str(out / "all")],
                    "expect windowed": ["expect", cfg, *span, "--workers", str(workers),
                                        "--out", str(out / "win"),
                                        *(x for q in WINDOWED for x in ("--question", q))],
                }  # fmt: skip
                for name, args in runs.items():  # alternated, best of the rounds
                    out.mkdir(parents=True, exist_ok=True)
                    best[name] = min(best.get(name, float("inf")), timed(args))
                shutil.rmtree(out)
            b = best["batch"]
            print(
                f"  {workers} worker(s): batch {b:6.2f} s | expect {best['expect']:6.2f} s "
                f"= {b / best['expect']:.2f}x batch speed | the windowed questions "
                f"{best['expect windowed']:6.2f} s = {b / best['expect windowed']:.2f}x"
            )


if __name__ == "__main__":
    main()
