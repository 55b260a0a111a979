"""Token bucket and rate profiles, on a fake clock (no real time passes)."""

from __future__ import annotations

import math

import pytest
from pydantic import TypeAdapter, ValidationError

from datafactory.engine.clock import SimulatedClock
from datafactory.engine.rate import (
    ConstantProfile,
    DiurnalProfile,
    HourlyProfile,
    RampProfile,
    RateProfile,
    SpikeProfile,
    TokenBucket,
    WeeklyProfile,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def drive(bucket: TokenBucket, clock: SimulatedClock, seconds: float, chunk: int) -> int:
    """Acquire ``chunk``-sized slices as fast as allowed for ``seconds``; events granted."""
    end = clock.now() + seconds
    granted = 0
    while True:
        wait = bucket.acquire(chunk)
        if wait > 0:
            if clock.now() + wait > end:
                return granted
            clock.advance(wait)
            continue
        granted += chunk


@pytest.mark.parametrize("rate", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("chunk_fraction", [0.001, 0.02])
def test_bucket_holds_constant_rate_within_one_percent(rate: int, chunk_fraction: float) -> None:
    clock = SimulatedClock(T0)
    bucket = TokenBucket(ConstantProfile(base=rate), clock)
    chunk = max(1, int(rate * chunk_fraction))
    granted = drive(bucket, clock, 30.0, chunk)
    assert abs(granted - rate * 30) <= 0.01 * rate * 30, granted


def test_bucket_returns_wait_without_consuming() -> None:
    clock = SimulatedClock(T0)
    bucket = TokenBucket(ConstantProfile(base=100), clock)
    wait = bucket.acquire(10)
    assert wait == pytest.approx(0.1, abs=2e-6)
    assert bucket.acquire(10) == pytest.approx(0.1, abs=2e-6)  # nothing was taken
    clock.advance(wait)
    assert bucket.acquire(10) == 0.0
    assert bucket.acquire(1) > 0


def test_bucket_burst_is_bounded_after_idle() -> None:
    clock = SimulatedClock(T0)
    bucket = TokenBucket(ConstantProfile(base=1000), clock, burst=0.1)
    clock.advance(60)  # a minute idle must not bank 60k events
    assert bucket.acquire(100) == 0.0
    assert bucket.acquire(100) > 0


def test_bucket_follows_a_ramp() -> None:
    clock = SimulatedClock(T0)
    prof = RampProfile(profile="ramp", start=0, end=10_000, duration=10)
    bucket = TokenBucket(prof, clock)
    granted = drive(bucket, clock, 10.0, 10)
    assert abs(granted - 50_000) <= 500  # area of the triangle


def test_live_profile_change_keeps_pace() -> None:
    clock = SimulatedClock(T0)
    bucket = TokenBucket(ConstantProfile(base=1000), clock)
    first = drive(bucket, clock, 10.0, 10)
    bucket.set_profile(ConstantProfile(base=5000))
    second = drive(bucket, clock, 10.0, 50)
    assert abs(first - 10_000) <= 100
    assert abs(second - 50_000) <= 500


def numeric_integral(prof: object, t1: float, t2: float, steps: int = 200_000) -> float:
    h = (t2 - t1) / steps
    return sum(prof.rate(t1 + (i + 0.5) * h, T0) for i in range(steps)) * h  # type: ignore[attr-defined]


PROFILES = [
    ConstantProfile(base=123),
    RampProfile(profile="ramp", start=100, end=900, duration=600, delay=60),
    DiurnalProfile(profile="diurnal", base=1000, amplitude=0.6, period=86400, phase=50400),
    SpikeProfile(profile="spike", base=10, peak=500, start=300, duration=60, every=900),
    HourlyProfile(profile="hourly", base=100, weights=tuple(float(h % 7 + 1) for h in range(24))),
    WeeklyProfile.model_validate(
        {
            "profile": "weekly",
            "base": 100,
            "hourly": [float(h % 5 + 1) for h in range(24)],
            "weekday": [1, 1, 1, 1, 1.2, 1.5, 0.5],
            "holidays": [{"date": "12-24", "factor": 1.8}, {"date": "01-01", "factor": 0.3}],
            "strength": 0.8,
        }
    ),
]


@pytest.mark.parametrize("prof", PROFILES, ids=lambda p: p.profile)
def test_cumulative_is_the_integral_of_rate(prof: object) -> None:
    t1, t2 = T0 + 17.0, T0 + 7_300.0
    exact = prof.cumulative(t2, T0) - prof.cumulative(t1, T0)  # type: ignore[attr-defined]
    assert exact == pytest.approx(numeric_integral(prof, t1, t2), rel=2e-3)


def test_diurnal_shape() -> None:
    p = DiurnalProfile(profile="diurnal", base=1000, amplitude=0.5, period=86400, phase=14 * 3600)
    assert p.rate(T0 + 14 * 3600, T0) == pytest.approx(1500)
    assert p.rate(T0 + 2 * 3600, T0) == pytest.approx(500)
    day = p.cumulative(T0 + 86400, T0)
    assert day == pytest.approx(1000 * 86400)


def test_ramp_shape() -> None:
    p = RampProfile(profile="ramp", start=100, end=900, duration=800, delay=100)
    assert p.rate(T0 + 50, T0) == 100
    assert p.rate(T0 + 500, T0) == pytest.approx(500)
    assert p.rate(T0 + 10_000, T0) == 900


def test_spike_shape_repeats() -> None:
    p = SpikeProfile(profile="spike", base=10, peak=500, start=300, duration=60, every=900)
    assert p.rate(T0 + 299, T0) == 10
    assert p.rate(T0 + 330, T0) == 500
    assert p.rate(T0 + 361, T0) == 10
    assert p.rate(T0 + 1230, T0) == 500  # second spike at 1200..1260


def test_hourly_shape_and_mean() -> None:
    weights = tuple([0.0] * 6 + [2.0] * 12 + [1.0] * 6)
    p = HourlyProfile(profile="hourly", base=100, weights=weights)
    mean_w = sum(weights) / 24
    assert p.rate(T0 + 3 * 3600, T0) == 0
    assert p.rate(T0 + 10 * 3600, T0) == pytest.approx(100 * 2 / mean_w)
    assert p.cumulative(T0 + 86400, T0) == pytest.approx(100 * 86400)


def test_bucket_crosses_a_closed_night() -> None:
    """Zero-rate hours: the bucket waits (capped) and resumes when the rate returns."""
    weights = tuple([0.0] * 8 + [1.0] * 16)
    clock = SimulatedClock(T0)
    bucket = TokenBucket(HourlyProfile(profile="hourly", base=100, weights=weights), clock)
    granted = drive(bucket, clock, 86400.0, 500)
    assert abs(granted - 100 * 86400) <= 0.01 * 100 * 86400


@pytest.mark.parametrize(
    "bad",
    [
        {"profile": "constant", "base": -5},
        {"profile": "diurnal", "base": 10, "amplitude": 1.5},
        {"profile": "spike", "base": 1, "peak": 2, "start": "1m", "duration": "0s"},
        {"profile": "weekly", "base": 1, "hourly": [1.0] * 24, "weekday": [1, 1, 1, -1, 1, 1, 1]},
        {"profile": "constant", "base": 1e9},  # over 10 million events/s
        {"profile": "constant", "base": float("nan")},
        {"profile": "hourly", "base": 1, "weights": [1.0] * 23},
        {"profile": "ramp", "start": 1, "end": 2, "duration": "soon"},
        {"profile": "sawtooth", "base": 1},
    ],
)
def test_invalid_profiles_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(RateProfile).validate_python(bad)


def test_what_the_schema_allows_has_a_meaning() -> None:
    """Spikes that repeat before they end are one long spike; weights all 0: no events."""
    spike = TypeAdapter(RateProfile).validate_python(
        {"profile": "spike", "base": 1, "peak": 9, "start": "1m", "duration": "2m", "every": "1m"}
    )
    assert spike.rate(T0 + 30, T0) == 1 and spike.rate(T0 + 3600, T0) == 9
    assert spike.cumulative(T0 + 3600, T0) == 60 + 9 * 3540
    zero = TypeAdapter(RateProfile).validate_python(
        {"profile": "hourly", "base": 5, "weights": [0.0] * 24}
    )
    assert zero.rate(T0, T0) == 0 and zero.cumulative(T0 + 86400, T0) == 0


def test_durations_parse() -> None:
    p = TypeAdapter(RateProfile).validate_python(
        {"profile": "diurnal", "base": 1, "amplitude": 0.1, "period": "12h", "phase": "90m"}
    )
    assert isinstance(p, DiurnalProfile)
    assert (p.period, p.phase) == (43200.0, 5400.0)
    assert math.isclose(p.rate(T0 + 5400, T0), 1.1)


def test_weekly_shape_weekdays_and_holidays() -> None:
    import datetime as dt

    p = PROFILES[-1]
    assert isinstance(p, WeeklyProfile)

    def at(y: int, m: int, d: int, h: int = 0) -> float:
        return dt.datetime(y, m, d, h, tzinfo=dt.UTC).timestamp()

    # an ordinary week averages `base`; a Saturday (1.5) outsells a Sunday (0.5) threefold
    monday = at(2026, 3, 2)
    assert p.cumulative(monday + 7 * 86400, monday) / (7 * 86400) == pytest.approx(100)
    sat = p.cumulative(at(2026, 3, 8), at(2026, 3, 7)) - 0.2 * 100 * 86400
    sun = p.cumulative(at(2026, 3, 9), at(2026, 3, 8)) - 0.2 * 100 * 86400
    assert sat == pytest.approx(3 * sun)
    # Christmas Eve 2026 (a Thursday) is 1.8 x an ordinary Thursday; across years it holds
    for year in (2026, 2031):
        eve = at(year, 12, 24)
        before = eve - 7 * 86400
        shaped_eve = p.cumulative(eve + 86400, eve) - 0.2 * 100 * 86400
        shaped_before = p.cumulative(before + 86400, before) - 0.2 * 100 * 86400
        assert shaped_eve == pytest.approx(1.8 * shaped_before)
    # the integral over a long span is the sum of its parts (holidays counted once)
    a, b, c = at(2025, 12, 1), at(2026, 1, 15, 13), at(2027, 2, 1)
    assert p.cumulative(c, a) == pytest.approx(p.cumulative(b, a) + p.cumulative(c, b))


def test_weekly_cumulatives_in_numpy_are_the_scalar_ones_bit_for_bit() -> None:
    """Where events fall inside a slice is read off a grid of the profile's integral, which
    a weekly profile computes in numpy: the same floats as one at a time (else the same
    seq would be a different event after this change), holidays and blends included."""
    import random

    import numpy as np

    from datafactory.engine.rate import WeeklyProfile, cumulatives

    rng = random.Random(5)
    for _ in range(60):
        prof = WeeklyProfile(
            profile="weekly",
            base=rng.choice([0.116, 3.0, 2000.0]),
            hourly=tuple(rng.choice([0.0, 0.05, 0.3, 1.1, 2.5]) for _ in range(24)),
            weekday=tuple(rng.choice([0.0, 0.85, 1.15, 1.45]) for _ in range(7)),
            holidays=tuple(
                {"date": d, "factor": f}
                for d, f in rng.sample([("12-24", 2.0), ("02-29", 3.0), ("01-01", 0.2)], 2)
            ),
            strength=rng.choice([1.0, 0.7, 0.0]),
        )
        t0 = rng.uniform(1.5e9, 1.8e9)
        a = rng.uniform(t0, t0 + 800 * 86400)
        grid = np.linspace(a, a + rng.choice([60.0, 3600.0, 8 * 86400.0]), 97)
        one_at_a_time = [prof.cumulative(float(t), t0) for t in grid]
        assert cumulatives(prof, grid, t0).tolist() == one_at_a_time
