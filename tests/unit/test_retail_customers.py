"""The retail customer model: churn at the configured annual rate, and churned customers who
never buy until they are won back, across the pos_transaction and customer_event streams."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from datafactory.config import parse_config
from datafactory.runtime.engine import Engine
from datafactory_retail import RetailParams
from datafactory_retail.customers import DAY_US, Customers

T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)


def simulate_year(**params: float) -> Customers:
    p = RetailParams(customers=20_000, **params)  # type: ignore[arg-type]
    c = Customers(p, np.random.default_rng(7), 50)
    rng = np.random.default_rng(8)
    c.advance(T0)
    seq = 0
    for day in range(1, 366):
        now = T0 + day * DAY_US
        # a day of purchases by active customers, all released
        buyers = c.pick(5_000, np.arange(seq, seq + 5_000))
        seq += 5_000
        c.released(buyers, now - rng.integers(0, DAY_US, len(buyers)), seq)
        c.advance(now)
    return c


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.4])
def test_annual_churn_rate_is_reproduced_within_10_percent(rate: float) -> None:
    c = simulate_year(churn_rate=rate, winback_rate=0.0, acquisition_rate=0.0)
    observed = c.churned_total / 20_000
    assert abs(observed - rate) / rate < 0.10, observed


def test_inactive_and_non_member_customers_churn_first() -> None:
    c = simulate_year(churn_rate=0.3, winback_rate=0.0, acquisition_rate=0.0)
    churned = c.status == 1
    member_rate = churned[c.loyalty].mean()
    other_rate = churned[~c.loyalty].mean()
    assert other_rate > 1.3 * member_rate


def test_acquisition_and_winback_grow_and_refill_the_base() -> None:
    c = simulate_year(churn_rate=0.2, winback_rate=0.5, acquisition_rate=0.25)
    assert 0.2 * 20_000 < c.n - 20_000 < 0.3 * 20_000  # ~25% new customers in a year
    assert (c.status == 0).sum() > 0.8 * 20_000


CFG = """
run: {{name: cust, seed: 11, clock: simulated, start: 2026-01-05T00:00:00Z}}
packs:
  retail:
    params: {{customers: 2000, stores: 5, skus: 200, churn_rate: 0.9, winback_rate: 0.9,
              acquisition_rate: 1.0}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 0.05}}, max_events: 130000}}
      customer_event: {{}}
sinks:
  out: {{type: file, path: "{out}"}}
telemetry: {{enabled: false}}
"""


def _us(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1_000_000)


async def test_every_customer_exists_first_and_churned_customers_do_not_buy(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    await Engine(parse_config(CFG.format(out=out))).run()

    def rows(stream: str) -> list[dict[str, object]]:
        return [
            orjson.loads(x)
            for f in sorted((out / "retail" / stream).glob("*.jsonl"))
            for x in f.read_bytes().splitlines()
        ]

    events = rows("customer_event")
    sales = rows("pos_transaction")
    assert len(sales) == 130_000
    times = [_us(str(e["event_time"])) for e in events]
    assert times == sorted(times)  # released in event-time order
    kinds = defaultdict(int)
    for e in events:
        kinds[e["event_type"]] += 1
    assert kinds["created"] > 2000 and kinds["churned"] > 200 and kinds["reactivated"] > 20
    # per customer: the intervals in which they may buy
    history: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for e, t in zip(events, times, strict=True):
        history[str(e["customer_id"])].append((t, str(e["event_type"])))
    named = [(str(s["customer_id"]), _us(str(s["event_time"]))) for s in sales if s["customer_id"]]
    assert len(named) > 50_000
    for customer, t in named:
        h = history.get(customer)
        assert h is not None and h[0][1] == "created" and h[0][0] <= t, customer
        state = "active"
        for when, kind in h:  # the last status change before the purchase
            if when > t:
                break
            if kind in ("churned", "reactivated", "created"):
                state = "churned" if kind == "churned" else "active"
        assert state == "active", (customer, t, h)


def test_latest_per_customer_is_the_same_compiled_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_set_latest`` (a customer's latest pick or visit) is a scatter-max in C where the
    retail extension is built: the numpy version's result, and ``np.maximum.at``'s, for
    customers picked many times in a block."""
    from datafactory_retail import kernels
    from datafactory_retail.customers import _set_latest

    if kernels.native() is None:  # pragma: no cover - only where it is not built
        pytest.fail("the retail extension is part of the install; build it (pip install -e .)")
    rng = np.random.default_rng(8)
    for m, n in ((1, 5), (50, 400), (100_000, 3000)):
        start = rng.integers(-5, 50, m).astype(np.int64)
        idx = rng.integers(0, m, n).astype(np.int64)
        values = np.sort(rng.integers(0, 100, n)).astype(np.int64)  # non-decreasing
        fast, ref = start.copy(), start.copy()
        _set_latest(fast, idx, values)
        np.maximum.at(ref, idx, values)
        assert np.array_equal(fast, ref)
        with monkeypatch.context() as mp:
            mp.setenv("DATAFACTORY_FAST_PATH", "0")
            slow = start.copy()
            _set_latest(slow, idx, values)
        assert np.array_equal(slow, ref)
    with pytest.raises(ValueError, match="out of range"):
        _set_latest(np.zeros(3, np.int64), np.array([3]), np.array([1]))
