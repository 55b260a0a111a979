"""``in_processes``: results in submission order; when a call fails, the calls still running
have finished (and written what they write) before the error reaches the caller."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from datafactory.batch.processes import in_processes


def _slow_write(path: str, seconds: float) -> str:
    time.sleep(seconds)
    Path(path).write_text("done")
    return path


def _fail(seconds: float) -> None:
    time.sleep(seconds)
    raise ValueError("shard failed")


def _call(kind: str, path: str, seconds: float) -> object:
    return _fail(seconds) if kind == "fail" else _slow_write(path, seconds)


def test_results_come_in_submission_order(tmp_path: Path) -> None:
    calls = [("write", str(tmp_path / f"{i}"), 0.3 - 0.1 * i) for i in range(3)]
    assert list(in_processes(_call, calls, 2)) == [c[1] for c in calls]


def test_a_failure_waits_for_the_calls_still_running(tmp_path: Path) -> None:
    late = tmp_path / "late"
    calls = [("fail", "", 0.5), ("write", str(late), 2.0)]
    with pytest.raises(ValueError, match="shard failed"):
        list(in_processes(_call, calls, 2))
    assert late.read_text() == "done"  # written before the error came back
