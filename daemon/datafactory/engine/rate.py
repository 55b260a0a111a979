"""Rate profiles and the token bucket that meters each stream.

A profile is config (a frozen pydantic model) that knows its rate ``r(t)`` and its
antiderivative ``R(t)`` in closed form, so the bucket refills exactly ``R(t2) - R(t1)``
tokens between two calls, whatever the shape. Times are epoch seconds; ``t0`` is the run's
start, from which ramps and spikes are measured. Diurnal and hourly profiles follow the
clock's time of day (UTC).

The bucket never sleeps: ``acquire(n)`` takes ``n`` tokens and returns 0, or takes nothing
and returns how long to wait (Benthos ``RateLimit.Access``). The clock is injected.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import date as _date
from typing import Annotated, Any, Literal, TypeAlias

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.engine.clock import Clock
from datafactory.units import Duration

_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _overlap(a1: float, a2: float, b1: float, b2: float) -> float:
    return max(0.0, min(a2, b2) - max(a1, b1))


# bounds on what a profile may say: 10 million events/s per stream, spans of up to 100 years
MAX_RATE = 10_000_000.0
MAX_SPAN = 100 * 366 * 86_400.0
Weight = Annotated[float, Field(ge=0, le=1_000_000)]  # relative: only their ratios matter


class ConstantProfile(BaseModel):
    """The same rate all the time."""

    model_config = _FROZEN
    profile: Literal["constant"] = "constant"
    base: float = Field(ge=0, le=MAX_RATE, description="events per second", examples=[2000])

    def rate(self, t: float, t0: float) -> float:
        return self.base

    def cumulative(self, t: float, t0: float) -> float:
        return self.base * (t - t0)


class RampProfile(BaseModel):
    """Linear change from ``start`` to ``end`` events/s over ``duration``, then hold ``end``."""

    model_config = _FROZEN
    profile: Literal["ramp"]
    start: float = Field(
        ge=0, le=MAX_RATE, description="events per second at the run's start", examples=[100]
    )
    end: float = Field(
        ge=0, le=MAX_RATE, description="events per second once the ramp is done", examples=[5000]
    )
    duration: Duration = Field(le=MAX_SPAN, description="length of the ramp", examples=["10m"])
    delay: Duration = Field(
        le=MAX_SPAN, default=0.0, description="time at `start` before ramping", examples=["1m"]
    )

    def rate(self, t: float, t0: float) -> float:
        e = t - t0 - self.delay
        if e <= 0:
            return self.start
        if e >= self.duration:
            return self.end
        return self.start + (self.end - self.start) * e / self.duration

    def cumulative(self, t: float, t0: float) -> float:
        e = t - t0
        flat = e * self.start if e <= 0 else min(e, self.delay) * self.start
        r = min(max(e - self.delay, 0.0), self.duration)
        slope = (self.end - self.start) / self.duration if self.duration > 0 else 0.0
        ramp = self.start * r + 0.5 * slope * r * r
        after = max(e - self.delay - self.duration, 0.0) * self.end
        return flat + ramp + after


class DiurnalProfile(BaseModel):
    """A sine day: ``base * (1 + amplitude * cos(2π (t - phase) / period))``."""

    model_config = _FROZEN
    profile: Literal["diurnal"]
    base: float = Field(ge=0, le=MAX_RATE, description="mean events per second", examples=[2000])
    amplitude: float = Field(ge=0, le=1, description="relative swing, 0..1", examples=[0.6])
    period: Duration = Field(
        le=MAX_SPAN, default=86400.0, gt=0, description="length of a cycle", examples=["24h"]
    )
    phase: Duration = Field(
        le=MAX_SPAN,
        default=50400.0,
        description="where in the period the peak falls, from 00:00 UTC (default 14:00)",
        examples=["14h"],
    )

    def rate(self, t: float, t0: float) -> float:
        w = 2 * math.pi / self.period
        return self.base * (1 + self.amplitude * math.cos(w * (t - self.phase)))

    def cumulative(self, t: float, t0: float) -> float:
        w = 2 * math.pi / self.period

        def prim(x: float) -> float:
            return self.base * (x + self.amplitude * math.sin(w * (x - self.phase)) / w)

        return prim(t) - prim(t0)


class SpikeProfile(BaseModel):
    """``base`` events/s with a burst at ``peak`` for ``duration`` from ``start``, repeated
    every ``every`` if given."""

    model_config = _FROZEN
    profile: Literal["spike"]
    base: float = Field(
        ge=0, le=MAX_RATE, description="events per second outside the spike", examples=[500]
    )
    peak: float = Field(
        ge=0, le=MAX_RATE, description="events per second during the spike", examples=[20000]
    )
    start: Duration = Field(
        le=MAX_SPAN, description="time from the run's start to the spike", examples=["5m"]
    )
    duration: Duration = Field(
        le=MAX_SPAN, gt=0, description="length of the spike", examples=["30s"]
    )
    every: Duration | None = Field(
        le=MAX_SPAN,
        default=None,
        description="repeat period (no longer than `duration`: the peak from `start` on)",
        examples=["1h"],
    )

    def _in_spike(self, e: float) -> float:
        """Seconds of [0, e) that fall inside spikes (e >= 0)."""
        if e <= self.start:
            return 0.0
        x = e - self.start
        if self.every is None:
            return min(x, self.duration)
        if self.every <= self.duration:  # spikes that overlap: one long spike
            return x
        full, rem = divmod(x, self.every)
        return full * self.duration + min(rem, self.duration)

    def rate(self, t: float, t0: float) -> float:
        e = t - t0
        inside = self._in_spike(e + 1e-9) - self._in_spike(e) > 0
        return self.peak if inside else self.base

    def cumulative(self, t: float, t0: float) -> float:
        e = t - t0
        if e <= 0:
            return self.base * e
        return self.base * e + (self.peak - self.base) * self._in_spike(e)


class HourlyProfile(BaseModel):
    """``base`` shaped by 24 hour-of-day weights (UTC), normalised to a mean of 1."""

    model_config = _FROZEN
    profile: Literal["hourly"]
    base: float = Field(
        ge=0, le=MAX_RATE, description="mean events per second over a day", examples=[2000]
    )
    weights: tuple[Weight, ...] = Field(
        min_length=24,
        max_length=24,
        description="24 relative weights, hour 0 first",
        examples=[[0.1] * 7 + [1.0] * 17],
    )

    @model_validator(mode="after")
    def _check(self) -> HourlyProfile:
        if len(self.weights) != 24:
            raise ValueError(f"`weights` needs 24 values (one per hour), got {len(self.weights)}")
        if any(w < 0 for w in self.weights):
            raise ValueError("`weights` must be >= 0")
        return self

    @functools.cached_property
    def _rates(self) -> list[float]:
        mean = sum(self.weights) / 24  # all 0: no events (a stream held at rest)
        return [self.base * w / mean if mean else 0.0 for w in self.weights]

    @functools.cached_property
    def _before(self) -> list[float]:
        """Events from 00:00 to the start of each hour (25 entries)."""
        acc = [0.0]
        for r in self._rates:
            acc.append(acc[-1] + r * 3600)
        return acc

    def rate(self, t: float, t0: float) -> float:
        return self._rates[int((t % 86400) // 3600)]

    def _prim(self, t: float) -> float:
        days, rem = divmod(t, 86400.0)
        hour = min(int(rem // 3600), 23)
        return (
            days * self._before[24] + self._before[hour] + self._rates[hour] * (rem - hour * 3600)
        )

    def cumulative(self, t: float, t0: float) -> float:
        return self._prim(t) - self._prim(t0)


class Holiday(BaseModel):
    model_config = _FROZEN
    date: str = Field(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$", examples=["12-24"])
    factor: float = Field(
        ge=0, le=1000, description="multiplies the whole day (2.0: twice the sales)"
    )


class WeeklyProfile(BaseModel):
    """``base`` shaped by hour of day, day of week (UTC) and holidays (month-day, every year).

    ``strength`` blends the shape with a flat line (0: flat, 1: the full shape). The weights
    are normalised so an ordinary week averages ``base``.
    """

    model_config = _FROZEN
    profile: Literal["weekly"]
    base: float = Field(
        ge=0, le=MAX_RATE, description="mean events per second over an ordinary week"
    )
    hourly: tuple[Weight, ...] = Field(
        min_length=24, max_length=24, description="24 relative weights, hour 0 first"
    )
    weekday: tuple[Weight, ...] = Field(
        (1.0,) * 7, min_length=7, max_length=7, description="7 relative weights, Monday first"
    )
    holidays: tuple[Holiday, ...] = Field((), description="days scaled by a factor")
    strength: float = Field(1.0, ge=0, le=1, description="how much of the shape applies")

    @model_validator(mode="after")
    def _check(self) -> WeeklyProfile:
        if len(self.hourly) != 24:
            raise ValueError(f"`hourly` needs 24 values, got {len(self.hourly)}")
        if len(self.weekday) != 7:
            raise ValueError(f"`weekday` needs 7 values (Monday first), got {len(self.weekday)}")
        for name, ws in (("hourly", self.hourly), ("weekday", self.weekday)):
            if any(w < 0 for w in ws):
                raise ValueError(f"`{name}` must be >= 0")
        return self

    @functools.cached_property
    def _hour_rates(self) -> list[float]:
        """Per hour of an ordinary day with weekday weight 1: events/s (blended)."""
        mean_h = sum(self.hourly) / 24
        mean_d = sum(self.weekday) / 7
        s = self.strength
        if not mean_h or not mean_d:  # all 0: the shaped part makes no events
            return [0.0] * 24
        # rate(t) = base * ((1 - s) + s * hourly[h]/mean_h * weekday[d]/mean_d * holiday)
        return [self.base * s * w / mean_h / mean_d for w in self.hourly]

    @functools.cached_property
    def _day_shape(self) -> list[float]:
        """Events from 00:00 to the start of each hour of the shaped part (25 entries)."""
        acc = [0.0]
        for r in self._hour_rates:
            acc.append(acc[-1] + r * 3600)
        return acc

    @functools.cached_property
    def _holidays(self) -> dict[tuple[int, int], float]:
        return {(int(h.date[:2]), int(h.date[3:])): h.factor for h in self.holidays}

    def _day_factor(self, day: int) -> float:
        """weekday weight x holiday factor of day ``day`` (days since 1970-01-01)."""
        w = self.weekday[(day + 3) % 7]  # 1970-01-01 was a Thursday
        if self._holidays:
            d = _date.fromordinal(_EPOCH_ORDINAL + day)
            w *= self._holidays.get((d.month, d.day), 1.0)
        return w

    def rate(self, t: float, t0: float) -> float:
        day, rem = divmod(t, 86400.0)
        flat = self.base * (1 - self.strength)
        return flat + self._hour_rates[int(rem // 3600)] * self._day_factor(int(day))

    @functools.cached_property
    def _plain_week(self) -> float:
        return self._day_shape[24] * sum(self.weekday)

    def _year_extra(self, year: int) -> float:
        """Shaped events holidays add (or remove) in ``year``, over its plain weekdays."""
        extra = 0.0
        for (month, dom), factor in self._holidays.items():
            try:
                day = _date(year, month, dom).toordinal() - _EPOCH_ORDINAL
            except ValueError:  # 02-29 in a common year
                continue
            extra += (factor - 1.0) * self.weekday[(day + 3) % 7] * self._day_shape[24]
        return extra

    @functools.cached_property
    def _extra_cache(self) -> dict[int, float]:
        return {1970: 0.0}

    def _extra_before_year(self, year: int) -> float:
        """Holiday extras of every year from 1970 up to ``year`` (memoised, no recursion)."""
        cache = self._extra_cache
        if year in cache:
            return cache[year]
        known = max(y for y in cache if y < year) if year > 1970 else 1970
        acc = cache[known]
        for y in range(known, year):
            acc += self._year_extra(y)
            cache[y + 1] = acc
        return cache[year] if year > 1970 else 0.0

    @functools.cached_property
    def _day_bases(self) -> dict[int, tuple[float, float]]:
        return {}

    def _day(self, day: int) -> tuple[float, float]:
        """Day ``day``'s shaped events before it, and its factor (memoised per day)."""
        known = self._day_bases.get(day)
        if known is None:
            known = self._day_bases[day] = (self._before_day(day), self._day_factor(day))
        return known

    def _before_day(self, day: int) -> float:
        weeks, wd = divmod(day, 7)
        # shaped part: whole weeks, the days of this week before today
        shaped = weeks * self._plain_week
        start = weeks * 7
        shaped += sum(self.weekday[(start + k + 3) % 7] for k in range(wd)) * self._day_shape[24]
        if self._holidays:
            d = _date.fromordinal(_EPOCH_ORDINAL + day)
            shaped += self._extra_before_year(d.year)
            year_start = _date(d.year, 1, 1).toordinal() - _EPOCH_ORDINAL
            for (month, dom), factor in self._holidays.items():  # this year's, before today
                try:
                    hday = _date(d.year, month, dom).toordinal() - _EPOCH_ORDINAL
                except ValueError:
                    continue
                if year_start <= hday < day:
                    shaped += (factor - 1.0) * self.weekday[(hday + 3) % 7] * self._day_shape[24]
        return shaped

    def _prim(self, t: float) -> float:
        day_f, rem = divmod(t, 86400.0)
        before, factor = self._day(int(day_f))
        hour = min(int(rem // 3600), 23)
        today = self._day_shape[hour] + self._hour_rates[hour] * (rem - hour * 3600)
        return before + today * factor + self.base * (1 - self.strength) * t

    def _prims(self, ts: Any) -> Any:
        """``_prim`` of each of ``ts`` (epoch seconds >= 0), the same float operations in
        numpy: the same values, bit for bit."""
        rem = np.fmod(ts, 86400.0)
        days = ((ts - rem) / 86400.0).astype(np.int64)
        unique, at = np.unique(days, return_inverse=True)
        per_day = np.array([self._day(int(d)) for d in unique]).reshape(-1, 2)
        hour = np.minimum(np.floor_divide(rem, 3600.0).astype(np.int64), 23)
        shape, rates = self._shape_arrays
        today = shape[hour] + rates[hour] * (rem - hour * 3600.0)
        return per_day[at, 0] + today * per_day[at, 1] + self.base * (1 - self.strength) * ts

    @functools.cached_property
    def _shape_arrays(self) -> tuple[Any, Any]:
        return np.array(self._day_shape), np.array(self._hour_rates)

    def cumulative(self, t: float, t0: float) -> float:
        return self._prim(t) - self._prim(t0)


_EPOCH_ORDINAL = _date(1970, 1, 1).toordinal()

AnyProfile: TypeAlias = (
    ConstantProfile | RampProfile | DiurnalProfile | SpikeProfile | HourlyProfile | WeeklyProfile
)
RateProfile: TypeAlias = Annotated[AnyProfile, Field(discriminator="profile")]


class TokenBucket:
    """Meters events along a profile. ``acquire(n)`` returns 0 (granted) or a wait in seconds.

    The bucket starts empty (no burst at start) and holds at most ``burst`` seconds of the
    current rate, but never less than the largest request, so any request can succeed.
    """

    __slots__ = ("_base", "_last", "burst", "clock", "max_wait", "profile", "t0", "tokens")

    def __init__(
        self,
        profile: AnyProfile,
        clock: Clock,
        *,
        burst: float = 0.1,
        max_wait: float = 1.0,
        t0: float | None = None,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.burst = burst
        self.max_wait = max_wait
        self.restart(clock.now() if t0 is None else t0)

    def restart(self, t0: float) -> None:
        """Start the profile (and an empty bucket) at ``t0``."""
        self.t0 = self._last = t0
        # tokens = R(last) - base: the profile's integral is evaluated afresh each time, never
        # summed up slice by slice, so float errors do not pile up over a long run (whole
        # tokens taken move the base by whole numbers, exactly)
        self._base = 0.0
        self.tokens = 0.0

    def rate(self) -> float:
        """The target rate now (events/s)."""
        return self.profile.rate(self.clock.now(), self.t0)

    def _refill(self, now: float, n: int) -> None:
        if now <= self._last:
            return
        cum = self.profile.cumulative(now, self.t0)
        # a request's worth and a token more: the fraction of the next token is never lost
        hold = max(self.profile.rate(now, self.t0) * self.burst, n + 1.0, self.tokens)
        if cum - self._base > hold:  # earned beyond what the bucket holds: forgotten
            self._base = cum - hold
        self.tokens = cum - self._base
        self._last = now

    def _take(self, n: int) -> None:
        self._base += n
        self.tokens -= n

    def set_profile(self, profile: AnyProfile) -> None:
        """Change the shape live; tokens earned so far are kept."""
        self._refill(self.clock.now(), 0)
        self.profile = profile
        self._base = profile.cumulative(self._last, self.t0) - self.tokens

    def acquire(self, n: int) -> float:
        now = self.clock.now()
        self._refill(now, n)
        if self.tokens >= n - 1e-9 * n:  # the profile's integral in floats is inexact
            self._take(n)
            return 0.0
        deficit = n - self.tokens
        return self._time_to_earn(now, deficit)

    def _time_to_earn(self, now: float, deficit: float) -> float:
        """Smallest w (to 1 µs, at most ``max_wait``) with R(now + w) - R(now) >= deficit."""
        base = self.profile.cumulative(now, self.t0)

        def earned(w: float) -> float:
            return self.profile.cumulative(now + w, self.t0) - base

        r = self.profile.rate(now, self.t0)
        guess = deficit / r if r > 0 else self.max_wait
        if guess >= self.max_wait:
            return (
                self.max_wait
                if earned(self.max_wait) < deficit
                else self._bisect(earned, deficit, self.max_wait)
            )
        if earned(guess) >= deficit:
            return self._bisect(earned, deficit, guess)
        hi = guess
        while hi < self.max_wait and earned(hi) < deficit:
            hi = min(hi * 2, self.max_wait)
        return hi if earned(hi) < deficit else self._bisect(earned, deficit, hi)

    @staticmethod
    def _bisect(earned: Callable[[float], float], deficit: float, hi: float) -> float:
        lo = 0.0
        while hi - lo > 1e-6:
            mid = (lo + hi) / 2
            if earned(mid) >= deficit:
                hi = mid
            else:
                lo = mid
        return hi


# the piecewise-linear inverse of a profile's integral inside one span: a grid point every
# WARP_STEP seconds (at least WARP_POINTS, at most WARP_POINTS_MAX)
WARP_POINTS = 33
WARP_POINTS_MAX = 4097
WARP_STEP = 5.0


def event_times(profile: AnyProfile, t0: float, t_prev_us: int, now_us: int, n: int) -> Any:
    """``n`` event times in ``(t_prev, now]`` placed where the profile puts events: the
    k-th at the time its share of the slice's integral is reached (piecewise-linear inverse
    of the integral on a small grid). Exact for a constant rate; big simulated slices keep
    the profile's shape inside them."""
    k = np.arange(1, n + 1, dtype=np.int64)
    span = now_us - t_prev_us
    if span <= 0 or n == 1 or isinstance(profile, ConstantProfile):
        return t_prev_us + (k * span) // n
    points = int(min(max(WARP_POINTS, span / 1e6 / WARP_STEP), WARP_POINTS_MAX))
    grid = np.linspace(t_prev_us / 1e6, now_us / 1e6, points)
    cum = cumulatives(profile, grid, t0)
    cum -= cum[0]
    if cum[-1] <= 0:
        return t_prev_us + (k * span) // n
    times = np.interp(k / n * cum[-1], cum, grid)
    out = np.minimum((times * 1e6).astype(np.int64), now_us)
    out = np.maximum(out, t_prev_us + 1)
    return np.maximum.accumulate(out)  # never decreasing within the slice


def cumulatives(profile: AnyProfile, ts: Any, t0: float) -> Any:
    """``profile.cumulative(t, t0)`` of each of ``ts`` (a numpy array), bit for bit: in numpy
    where the profile has it (weekly), else one at a time."""
    if isinstance(profile, WeeklyProfile) and len(ts) and ts[0] >= 0:
        return profile._prims(ts) - profile._prim(t0)
    return np.array([profile.cumulative(float(t), t0) for t in ts])
