"""Returns refer to real, earlier transactions and lines, and refund them pro rata."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson

from datafactory.config import parse_config
from datafactory.runtime.engine import Engine

CFG = """
run: {{name: ret, seed: 21, clock: simulated, start: 2026-04-01T00:00:00Z}}
packs:
  retail:
    params: {{stores: 4, skus: 300, customers: 2000, expected_daily_transactions: 4320,
              return_rate: 0.05, return_window_days: 10}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 0.05}}, max_events: 60000}}
      return: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
telemetry: {{enabled: false}}
"""


def _us(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1_000_000)


async def test_returns_reference_earlier_transactions_and_refund_pro_rata(tmp_path: Path) -> None:
    out = tmp_path / "out"
    await Engine(parse_config(CFG.format(out=out))).run()

    def rows(stream: str) -> list[dict[str, object]]:
        return [
            orjson.loads(x)
            for f in sorted((out / "retail" / stream).glob("*.jsonl"))
            for x in f.read_bytes().splitlines()
        ]

    sales = {int(s["transaction_id"]): s for s in rows("pos_transaction")}  # type: ignore[call-overload]
    returns = rows("return")
    last = max(_us(str(s["event_time"])) for s in sales.values())
    # 5% of transactions come back 1 h .. 10 days later; those due after the run's end not
    # (yet): the expected count from each transaction's time
    hour, window = 3_600_000_000, 10 * 86_400_000_000
    expected = sum(
        0.05 * min(1.0, max(0.0, (last - _us(str(s["event_time"])) - hour) / (window - hour)))
        for s in sales.values()
    )
    assert abs(len(returns) - expected) < 0.1 * expected
    times = [_us(str(r["event_time"])) for r in returns]
    assert times == sorted(times) and times[-1] <= last
    for r in returns:
        sale = sales[int(r["transaction_id"])]  # type: ignore[call-overload]
        assert _us(str(sale["event_time"])) < _us(str(r["event_time"]))
        line = sale["items"][int(r["line"]) - 1]  # type: ignore[index, call-overload]
        assert line["line"] == r["line"] and line["sku"] == r["sku"]
        assert r["store_id"] == sale["store_id"] and r["customer_id"] == sale["customer_id"]
        assert 1 <= int(r["quantity"]) <= line["quantity"]  # type: ignore[call-overload]
        expected = Decimal(str(line["line_total"])) * int(r["quantity"]) / line["quantity"]
        assert Decimal(str(r["refund"])) == expected.quantize(Decimal("0.01"), "ROUND_FLOOR")


def test_return_reasons_are_drawn_as_rng_choice_draws_them() -> None:
    """The pack draws reasons with ``rng.choice``'s own steps (a CDF and ``searchsorted``),
    without its per-call checks: the same reasons, and the generator left in the same state,
    so the data is what ``rng.choice`` gave (a numpy that changed ``choice`` fails here)."""
    from datafactory_retail import _REASON_CDF, RETURN_REASON_P

    for seed in range(50):
        for n in (1, 7, 300):
            a, b = np.random.default_rng(seed), np.random.default_rng(seed)
            ours = np.searchsorted(_REASON_CDF, a.random(n), side="right")
            assert np.array_equal(ours, b.choice(4, n, p=list(RETURN_REASON_P)))
            assert a.random() == b.random()
