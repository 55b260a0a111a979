"""A batch history made by the command, as a user runs it (for the tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_batch(
    config: Path, lake: Path, start: str, end: str, *, shards: int = 1, workers: int = 1
) -> Path:
    """``datafactory batch`` of ``config`` over ``start..end`` into ``lake`` (its ledger
    beside it); the lake."""
    r = subprocess.run(
        [sys.executable, "-m", "datafactory", "batch", str(config), "--start", start, "--end",
         end, "--out", str(lake), "--shards", str(shards), "--workers", str(workers),
         "--no-progress", "--ledger", f"sqlite:///{lake}.db"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return lake
