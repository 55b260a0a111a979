"""The device fleet, simulated in fixed steps of ``step_seconds`` on the pack's own clock.

**Signals**: each device's reading is ``set_point + x + daily cycle + ambient * sensitivity
+ noise``, quantised to the sensor's resolution. ``x`` is an Ornstein-Uhlenbeck process
(mean-reverting at rate ``theta``, stationary sd ``sd``), stepped exactly over the time since
the device's previous reading; the ambient is an OU process per site (shared by its devices,
so readings of one site correlate).

**Heartbeats** at the type's interval (x ``heartbeat_scale``), sent while the device is up
and its site connected. **Outages**: a device goes down (hardware fault, or its battery runs
flat and is replaced) and a site loses its network, at Poisson rates with log-normal
durations. During a site outage devices keep measuring: with ``flush_probability`` a device
keeps up to ``buffer_readings`` readings and sends them when the network is back (their
``event_time`` is when they were measured, ``sent_at`` the reconnect); otherwise they are
lost.

**device_status** follows from heartbeats alone: ``device_offline`` at ``last heartbeat +
offline_after_missed * interval`` when no heartbeat came in that window (a heartbeat
exactly at that time still counts), ``device_online`` at the first heartbeat after that; every
device is ``device_online`` (registered) when the run starts.

**Alerts** (the documented rule, applied to each device's readings in measurement order, over
exactly the readings that reach the telemetry stream): ``alert_raised`` at the
``alert_samples``-th consecutive reading above ``limit``; then ``alert_cleared`` at the first
reading below ``clear``. Each alert is sent with the reading that decided it.

**Incidents** (ground truth, labelled on the affected events): ``thermal_runaway`` (a ramp of
``magnitude`` per minute past the limit until the ``fail`` level, then the device fails:
silence), ``stuck_at`` (the reading freezes for ``duration``), ``drift`` (``magnitude`` per
hour, for ``duration``), ``clock_skew`` (the device stamps its events ``magnitude`` seconds
off, for ``duration``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.engine.timeline import PendingEvents, Steps

S = 1_000_000  # microseconds per second


@dataclass(frozen=True)
class DeviceType:
    name: str
    metric: str
    unit: str
    share: float
    interval_s: float
    heartbeat_s: float
    set_point: float
    sd: float  # stationary sd of the OU part
    theta: float  # mean reversion, 1/s
    daily_amp: float
    ambient: float  # sensitivity to the site's ambient
    noise: float
    resolution: float
    limit: float
    clear: float
    fail: float  # thermal runaway: the device dies at this reading


TYPES = (
    DeviceType("thermal", "temperature_c", "C", 0.35, 30, 60, 45.0, 2.0, 1 / 600, 3.0, 2.0, 0.2,
               0.1, 70.0, 65.0, 90.0),
    DeviceType("vibration", "vibration_mm_s", "mm/s", 0.25, 10, 30, 2.5, 0.8, 1 / 120, 0.3, 0.05,
               0.1, 0.01, 5.0, 4.5, math.inf),
    DeviceType("power", "power_kw", "kW", 0.25, 15, 60, 12.0, 2.5, 1 / 900, 4.0, 0.5, 0.1, 0.01,
               20.0, 18.0, math.inf),
    DeviceType("humidity", "humidity_pct", "%", 0.15, 60, 120, 45.0, 5.0, 1 / 1800, 8.0, 2.0, 0.5,
               0.1, 75.0, 70.0, math.inf),
)  # fmt: skip
TYPE_NAMES = tuple(t.name for t in TYPES)
MODELS = ("TX-100", "TX-200", "VB-7", "PM-3", "HM-2")
_TYPE_MODELS = ((0, 1), (2,), (3,), (4,))
FIRMWARE = ("1.4.2", "1.5.0", "2.0.1", "2.1.0")
INCIDENTS = ("thermal_runaway", "stuck_at", "drift", "clock_skew")
# device_status values and what a label says an outage was
STATUSES = ("device_online", "device_offline")
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")
OUTAGE_CAUSES = ("hardware_fault", "battery", "site_network", "failed")
UP, FAILED = 0, 2


def _col(values: Any, dtype: Any) -> npt.NDArray[Any]:
    return np.asarray(values, dtype=dtype)


class Fleet(Steps):
    def __init__(
        self,
        p: Any,
        rng: np.random.Generator,
        signal_rng: np.random.Generator,
        incidents: list[Any],
        device_offset: int = 0,
        site_offset: int = 0,
        number_base: int = 0,
    ) -> None:
        """``rng``: the fleet and its outages; ``signal_rng``: the readings (so which
        streams are enabled does not change when devices go down). A batch shard's fleet:
        its devices and sites are numbered from the offsets, its alerts and incidents from
        ``number_base``."""
        super().__init__(int(p.step_seconds * S))
        self.p, self.rng, self.signal_rng = p, rng, signal_rng
        n = p.devices
        share = np.array([t.share for t in TYPES])
        self.type = rng.choice(len(TYPES), n, p=share / share.sum()).astype(np.int32)
        self.site = rng.integers(0, p.sites, n).astype(np.int32)
        self.model = np.array(
            [_TYPE_MODELS[t][k % len(_TYPE_MODELS[t])] for t, k in
             zip(self.type.tolist(), rng.integers(0, 2, n).tolist(), strict=True)],
            dtype=np.int32,
        )  # fmt: skip
        self.firmware = rng.choice(len(FIRMWARE), n, p=[0.1, 0.2, 0.4, 0.3]).astype(np.int32)
        self.install_days = rng.integers(30, 5 * 365, n)  # days before the run's start
        self.installed_us = np.zeros(n, dtype=np.int64)
        self.device_ids = tuple(f"D{device_offset + i + 1:06d}" for i in range(n))
        self.site_ids = tuple(f"SITE-{site_offset + i + 1:03d}" for i in range(p.sites))
        self.device_offset = device_offset
        self.site_region = rng.integers(0, len(REGIONS), p.sites).astype(np.int32)
        t = self.type

        def pick(attr: str) -> npt.NDArray[np.float64]:
            out: npt.NDArray[np.float64] = np.array([getattr(x, attr) for x in TYPES])[t]
            return out

        self.interval_us = np.round(pick("interval_s") * p.interval_scale * S).astype(np.int64)
        self.hb_us = np.round(pick("heartbeat_s") * p.heartbeat_scale * S).astype(np.int64)
        self.set_point, self.sd, self.theta = pick("set_point"), pick("sd"), pick("theta")
        self.daily_amp = pick("daily_amp") * p.daily_cycle
        self.ambient_k, self.noise = pick("ambient"), pick("noise")
        self.resolution = pick("resolution")
        self.limit, self.clear, self.fail = pick("limit"), pick("clear"), pick("fail")
        self.peak_s = rng.uniform(12, 17, n) * 3600  # hour of the daily peak
        # state
        self.x = rng.normal(0, 1, n) * self.sd
        self.ambient = np.zeros(p.sites)
        self.state = np.zeros(n, dtype=np.int8)
        self.down_from = np.zeros(n, dtype=np.int64)
        self.down_until = np.zeros(n, dtype=np.int64)
        self.down_cause = np.zeros(n, dtype=np.int8)
        self.site_down_from = np.zeros(p.sites, dtype=np.int64)
        self.site_down_until = np.zeros(p.sites, dtype=np.int64)
        self.flushes = np.zeros(n, dtype=np.bool_)  # this site outage: buffer and flush
        self.buffered = np.zeros(n, dtype=np.int64)
        self.battery = rng.uniform(40, 100, n)
        self.battery_life_days = np.maximum(7, rng.normal(p.battery_days, p.battery_days * 0.2, n))
        self.last_read_us = np.zeros(n, dtype=np.int64)
        self.next_read_us = np.zeros(n, dtype=np.int64)
        self.next_hb_us = np.zeros(n, dtype=np.int64)
        self.last_hb_us = np.zeros(n, dtype=np.int64)
        self.offline = np.zeros(n, dtype=np.bool_)
        self.reading_seq = np.zeros(n, dtype=np.int64)
        self.beyond = np.zeros(n, dtype=np.int64)  # consecutive readings above the limit
        self.raised = np.zeros(n, dtype=np.bool_)
        self.next_alert = number_base + 1
        self.booted_us = np.zeros(n, dtype=np.int64)
        # incidents: per device, at most one active (kind, start, end, magnitude, frozen)
        self.inc_kind = np.full(n, -1, dtype=np.int8)
        self.inc_id = np.zeros(n, dtype=np.int64)
        self.inc_start = np.zeros(n, dtype=np.int64)
        self.inc_end = np.zeros(n, dtype=np.int64)
        self.inc_mag = np.zeros(n)
        self.inc_frozen = np.full(n, np.nan)
        self.schedule = incidents  # IncidentSpec list (from params)
        self.next_incident = number_base + 1
        # one buffer per stream
        self.telemetry = PendingEvents()
        self.heartbeats = PendingEvents()
        self.alerts = PendingEvents()
        self.status = PendingEvents()
        self.emit = {"telemetry": False, "heartbeat": False, "alert": False, "device_status": False}

    # -- start ------------------------------------------------------------------------------

    def _start(self, now_us: int) -> None:
        n, rng = self.p.devices, self.rng
        self.installed_us = (now_us // (86_400 * S) - self.install_days) * 86_400 * S
        # phases: each device's first reading and heartbeat somewhere in its first interval
        self.next_read_us[:] = now_us + (rng.random(n) * self.interval_us).astype(np.int64) + 1
        self.next_hb_us[:] = now_us + (rng.random(n) * self.hb_us).astype(np.int64) + 1
        if self.emit["device_status"]:  # registered: online, no heartbeat yet
            idx = np.arange(n, dtype=np.int64)
            self._status(np.full(n, now_us), idx, 0, np.full(n, -1, dtype=np.int8))
        self.last_hb_us[:] = now_us
        self.last_read_us[:] = now_us
        self.booted_us[:] = now_us - rng.integers(0, 30 * 86_400, n) * S
        self._fixed = sorted(
            ((now_us + int(spec.at_seconds(now_us) * S), i) for i, spec in enumerate(self.schedule)
             if spec.at is not None),
        )  # fmt: skip

    # -- one step ---------------------------------------------------------------------------

    def _step(self, t0: int, t1: int) -> None:
        p, rng = self.p, self.rng
        dt_s = (t1 - t0) / S
        year_s = 365 * 86_400
        self._fire_incidents(t0, t1)
        # new device outages (hardware faults) and battery deaths, for devices not down now
        up = np.flatnonzero((self.state == UP) & (self.down_until <= t0))
        self.battery[up] -= 100 * dt_s / (self.battery_life_days[up] * 86_400)
        flat = up[self.battery[up] <= 0]
        fault = up[rng.random(len(up)) < p.device_outage_rate * dt_s / year_s]
        fault = np.setdiff1d(fault, flat)
        for idx, cause, mean_h in (
            (fault, 0, p.device_outage_hours),
            (flat, 1, p.battery_swap_hours),
        ):
            if len(idx):
                start = t0 + (rng.random(len(idx)) * (t1 - t0)).astype(np.int64) + 1
                hours = _lognormal(rng, mean_h, p.outage_sigma, len(idx))
                self.down_from[idx] = start
                self.down_until[idx] = start + (hours * 3600 * S).astype(np.int64)
                self.down_cause[idx] = cause
                self.booted_us[idx] = self.down_until[idx]  # it reboots when it comes back
                if cause == 1:
                    self.battery[idx] = 100.0  # a new battery, fitted when it comes back
        # site network outages
        ok = np.flatnonzero(self.site_down_until <= t0)
        hit = ok[rng.random(len(ok)) < p.site_outage_rate * dt_s / year_s]
        if len(hit):
            start = t0 + (rng.random(len(hit)) * (t1 - t0)).astype(np.int64) + 1
            minutes = _lognormal(rng, p.site_outage_minutes, p.outage_sigma, len(hit))
            self.site_down_from[hit] = start
            self.site_down_until[hit] = start + (minutes * 60 * S).astype(np.int64)
            members = np.flatnonzero(np.isin(self.site, hit))
            self.flushes[members] = rng.random(len(members)) < p.flush_probability
            self.buffered[members] = 0
        # the sites' ambient moves on (OU per site, exact over the step)
        a = math.exp(-dt_s / 3600)
        self.ambient = self.ambient * a + math.sqrt(1 - a * a) * rng.normal(0, 1, p.sites)
        self._readings(t1)
        self._heartbeats(t0, t1)

    def _down_at(self, dev: npt.NDArray[np.int64], t: npt.NDArray[np.int64]) -> Any:
        """Device failed, or in an outage, at ``t``."""
        return (self.state[dev] == FAILED) | (
            (self.down_from[dev] <= t) & (t < self.down_until[dev])
        )

    def _site_down_at(self, dev: npt.NDArray[np.int64], t: npt.NDArray[np.int64]) -> Any:
        s = self.site[dev]
        return (self.site_down_from[s] <= t) & (t < self.site_down_until[s])

    def _cause(self, dev: npt.NDArray[np.int64], t: npt.NDArray[np.int64]) -> Any:
        """Why a device was silent at ``t`` (ground truth for an offline event)."""
        cause = np.full(len(dev), 2, dtype=np.int8)  # site network, unless...
        down = (self.down_from[dev] <= t) & (t < self.down_until[dev])
        cause[down] = self.down_cause[dev][down]
        cause[self.state[dev] == FAILED] = 3
        return cause

    # -- readings and alerts ----------------------------------------------------------------

    def _readings(self, t1: int) -> None:
        rng = self.signal_rng
        while True:
            dev = np.flatnonzero(self.next_read_us <= t1)
            if not len(dev):
                return
            t: npt.NDArray[np.int64] = self.next_read_us[dev].copy()
            self.next_read_us[dev] += self.interval_us[dev]
            live = ~self._down_at(dev, t)
            dev, t = dev[live], t[live]
            if not len(dev):
                continue
            # the OU part, exact over the time since the last reading
            dt = (t - self.last_read_us[dev]) / S
            a = np.exp(-self.theta[dev] * dt)
            self.x[dev] = self.x[dev] * a + self.sd[dev] * np.sqrt(1 - a * a) * rng.normal(
                0, 1, len(dev)
            )
            self.last_read_us[dev] = t
            day_s = (t // S) % 86_400
            value = (
                self.set_point[dev]
                + self.x[dev]
                + self.daily_amp[dev] * np.cos(2 * np.pi * (day_s - self.peak_s[dev]) / 86_400)
                + self.ambient_k[dev] * self.ambient[self.site[dev]]
                + self.noise[dev] * rng.normal(0, 1, len(dev))
            )
            value, label, stamp, failing = self._incidents(dev, t, value)
            self.state[dev[failing]] = FAILED  # this reading was its last
            res = self.resolution[dev]
            value = np.round(value / res) * res
            # site offline: buffered (to be sent at the reconnect) or lost
            site_down = self._site_down_at(dev, t)
            sent_at = t.copy()
            if site_down.any():
                keep = ~site_down | (
                    self.flushes[dev] & (self.buffered[dev] < self.p.buffer_readings)
                )
                buf = dev[site_down & keep]
                self.buffered[buf] += 1
                sent_at = np.where(site_down, self.site_down_until[self.site[dev]], t)
                dev, t, value, label, stamp, sent_at = (
                    arr[keep] for arr in (dev, t, value, label, stamp, sent_at)
                )
            if not len(dev):
                continue
            self.reading_seq[dev] += 1
            if self.emit["telemetry"]:
                self.telemetry.add(
                    t=sent_at,
                    device=dev,
                    event_time=stamp,
                    measured=t,
                    value=value,
                    seq=self.reading_seq[dev].copy(),
                    label=label,
                    incident=self.inc_id[dev].copy(),
                )
            self._alerts(dev, t, value, sent_at)

    def _alerts(self, dev: Any, t: Any, value: Any, sent_at: Any) -> None:
        above = value > self.limit[dev]
        self.beyond[dev] = np.where(above, self.beyond[dev] + 1, 0)
        raise_ = ~self.raised[dev] & (self.beyond[dev] >= self.p.alert_samples)
        clear = self.raised[dev] & (value < self.clear[dev])
        fired = raise_ | clear
        if not fired.any():
            return
        self.raised[dev[raise_]] = True
        self.raised[dev[clear]] = False
        k = int(fired.sum())
        if self.emit["alert"]:
            d = dev[fired]
            self.alerts.add(
                t=sent_at[fired],
                device=d,
                event_time=t[fired],
                kind=np.where(raise_[fired], 0, 1).astype(np.int8),
                value=value[fired],
                threshold=np.where(raise_[fired], self.limit[d], self.clear[d]),
                seq=self.reading_seq[d].copy(),
                alert_id=np.arange(self.next_alert, self.next_alert + k, dtype=np.int64),
            )
        self.next_alert += k

    def _incidents(
        self, dev: Any, t: Any, value: Any
    ) -> tuple[Any, Any, Any, npt.NDArray[np.bool_]]:
        """Readings under an incident: changed value / timestamp, labelled with the kind."""
        kind = self.inc_kind[dev]
        on = (kind >= 0) & (t >= self.inc_start[dev]) & (t < self.inc_end[dev])
        label = np.where(on, kind, -1).astype(np.int8)
        stamp = t.copy()
        failing = np.zeros(len(dev), dtype=np.bool_)
        if not on.any():
            self._expire(dev, t)
            return value, label, stamp, failing
        mins = (t - self.inc_start[dev]) / (60 * S)
        mag = self.inc_mag[dev]
        runaway = on & (kind == 0)
        value = np.where(runaway, value + mag * mins, value)
        failing = runaway & (value >= self.fail[dev])
        stuck = on & (kind == 1)
        if stuck.any():
            first = stuck & np.isnan(self.inc_frozen[dev])
            self.inc_frozen[dev[first]] = value[first]
            value = np.where(stuck, self.inc_frozen[dev], value)
        value = np.where(on & (kind == 2), value + mag * mins / 60, value)
        skew = on & (kind == 3)
        stamp = np.where(skew, t + (mag * S).astype(np.int64), t)
        self._expire(dev, t)
        return value, label, stamp, failing

    def _expire(self, dev: Any, t: Any) -> None:
        over = (self.inc_kind[dev] >= 0) & (t >= self.inc_end[dev])
        if over.any():
            self.inc_kind[dev[over]] = -1
            self.inc_frozen[dev[over]] = np.nan

    def _fire_incidents(self, t0: int, t1: int) -> None:
        """Incidents due in ``(t0, t1]``: scheduled at a time, or at a rate per day."""
        rng = self.rng
        while self._fixed and self._fixed[0][0] <= t1:
            start, i = self._fixed.pop(0)
            self._begin(self.schedule[i], max(start, t0 + 1))
        for spec in self.schedule:
            if spec.rate_per_day:
                for _ in range(int(rng.poisson(spec.rate_per_day * (t1 - t0) / (86_400 * S)))):
                    self._begin(spec, t0 + 1 + int(rng.random() * (t1 - t0 - 1)))

    def _begin(self, spec: Any, start: int) -> None:
        kind = INCIDENTS.index(spec.kind)
        if spec.device is not None:
            dev = self.device_ids.index(spec.device)
        else:
            ok = (self.state == UP) & (self.inc_kind < 0)
            if kind == 0:
                ok &= self.type == 0
            pool = np.flatnonzero(ok)
            if not len(pool):
                return
            dev = int(pool[int(self.rng.integers(0, len(pool)))])
        duration = np.iinfo(np.int64).max // 4 if spec.duration is None else int(spec.duration * S)
        self.start_incident(dev, kind, start, duration, spec.magnitude_or_default())

    def start_incident(
        self, dev: int, kind: int, start_us: int, duration_us: int, magnitude: float
    ) -> None:
        if self.state[dev] == FAILED:
            return
        self.inc_kind[dev] = kind
        self.inc_id[dev] = self.next_incident
        self.next_incident += 1
        self.inc_start[dev] = start_us
        self.inc_end[dev] = start_us + duration_us
        self.inc_mag[dev] = magnitude
        self.inc_frozen[dev] = np.nan

    # -- heartbeats and status --------------------------------------------------------------

    def _heartbeats(self, t0: int, t1: int) -> None:
        window = self.p.offline_after_missed * self.hb_us
        dev = np.flatnonzero(self.next_hb_us <= t1)  # at most one per step (step <= interval)
        h = self.next_hb_us[dev].copy()
        self.next_hb_us[dev] += self.hb_us[dev]
        sent = ~self._down_at(dev, h) & ~self._site_down_at(dev, h)
        sent &= self.state[dev] != FAILED
        dev, h = dev[sent], h[sent]
        # offline: the window since the last heartbeat closed without one (a heartbeat at its
        # very end counts); checked before this step's heartbeats
        hb_at = np.full(self.p.devices, np.iinfo(np.int64).max)
        hb_at[dev] = h
        deadline = self.last_hb_us + window
        off = np.flatnonzero(~self.offline & (deadline <= t1) & (deadline < hb_at))
        if len(off):
            self.offline[off] = True
            self._status(deadline[off], off, 1, self._cause(off, deadline[off]))
        on = dev[self.offline[dev]]
        if len(on):
            self.offline[on] = False
            self._status(hb_at[on], on, 0, np.full(len(on), -1, dtype=np.int8))
        if self.emit["heartbeat"] and len(dev):
            self.heartbeats.add(
                t=h,
                device=dev,
                battery=np.clip(np.round(self.battery[dev], 1), 0, 100),
                uptime=(h - self.booted_us[dev]) // S,
                rssi=(-55 - 25 * self.signal_rng.random(len(dev))).astype(np.int32),
            )
        self.last_hb_us[dev] = h

    def _status(self, t: Any, dev: Any, status: int, cause: Any) -> None:
        if self.emit["device_status"] and len(dev):
            self.status.add(
                t=np.asarray(t, dtype=np.int64),
                device=np.asarray(dev, dtype=np.int64),
                status=np.full(len(dev), status, dtype=np.int8),
                last_hb=self.last_hb_us[dev].copy(),
                cause=np.asarray(cause, dtype=np.int8),
            )


def _lognormal(rng: np.random.Generator, mean: float, sigma: float, n: int) -> Any:
    """Log-normal draws with this mean (not median)."""
    return rng.lognormal(math.log(mean) - sigma * sigma / 2, sigma, n)
