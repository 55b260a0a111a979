"""IoT: a fleet of sensors at sites — physics, heartbeats, outages, alerts and incidents.

Every stream is driven by the fleet's own clock (``clock_driven``): the fleet is simulated in
steps of ``step_seconds`` up to *now* (the wall clock, or a simulated clock as fast as the
machine allows), and each stream releases what happened by then. Volume follows the fleet:
``devices`` and each type's reading interval (x ``interval_scale``), not a rate. See
``fleet.py`` for the model and the exact rules (offline/online, alert hysteresis).

Streams: ``telemetry`` (readings; late ones flushed after a site's network comes back carry
the time they were measured, ``sent_at`` says when they were sent), ``heartbeat``, ``alert``
(raised / cleared) and ``device_status`` (online / offline, and every device registered
online at the start). Incidents from ``incidents:`` are labelled on the telemetry they shaped
(ground truth in the manifest, step ``domain``); offline events are labelled with the cause.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.engine.blocks import DictColumn, Label, RecordBlock
from datafactory.engine.seeding import SeedTree
from datafactory.expect.questions import Question
from datafactory.pack import Pack, Shard, StreamGenerator, StreamSpec
from datafactory.units import Duration
from datafactory_iot.fleet import (
    FIRMWARE,
    INCIDENTS,
    MODELS,
    OUTAGE_CAUSES,
    REGIONS,
    STATUSES,
    TYPE_NAMES,
    TYPES,
    Fleet,
)
from datafactory_iot.questions import QUESTIONS

DEFAULT_MAGNITUDE = {"thermal_runaway": 0.5, "stuck_at": 0.0, "drift": 1.0, "clock_skew": 300.0}


class IncidentSpec(BaseModel):
    """An edge case to inject: at a time (``at``, after the run's start) or at a rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["thermal_runaway", "stuck_at", "drift", "clock_skew"]
    at: Duration | None = Field(None, ge=0, description="this long after the run starts")
    rate_per_day: float = Field(0.0, ge=0, le=10_000, description="or: this many a day")
    device: str | None = Field(
        None, pattern=r"^D\d{6}$", description="which device (default: a random one)"
    )
    duration: Duration | None = Field(
        None, gt=0, description="how long (default: until the end; a runaway ends in failure)"
    )
    magnitude: float | None = Field(
        None,
        description="runaway: degrees per minute (0.5); drift: units per hour (1.0); "
        "clock_skew: seconds (300)",
    )

    @model_validator(mode="after")
    def _when(self) -> IncidentSpec:
        if (self.at is None) == (self.rate_per_day == 0):
            raise ValueError("an incident needs exactly one of `at` or `rate_per_day`")
        return self

    def at_seconds(self, _now_us: int) -> float:
        return float(self.at or 0)

    def magnitude_or_default(self) -> float:
        return self.magnitude if self.magnitude is not None else DEFAULT_MAGNITUDE[self.kind]


class IotParams(BaseModel):
    """Parameters of the IoT pack (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sites: int = Field(20, ge=1, le=100_000, description="sites (each its own network)")
    devices: int = Field(1000, ge=1, le=2_000_000, description="devices in the fleet")
    interval_scale: float = Field(
        1.0, gt=0, le=1000, description="multiplies every type's reading interval"
    )
    step_seconds: float = Field(
        10, ge=1, le=600, description="simulation step (the most a reading waits to be sent)"
    )
    heartbeat_scale: float = Field(
        1.0, gt=0, le=1000, description="multiplies every type's heartbeat interval"
    )
    offline_after_missed: int = Field(
        3, ge=1, le=100, description="offline after this many heartbeat intervals of silence"
    )
    device_outage_rate: float = Field(
        2.0, ge=0, le=10_000, description="hardware outages per device per year"
    )
    device_outage_hours: float = Field(6.0, gt=0, le=8760, description="their mean length")
    battery_days: float = Field(
        180, gt=0, le=36_500, description="mean battery life (a flat battery: an outage)"
    )
    battery_swap_hours: float = Field(24.0, gt=0, le=8760, description="time to replace one")
    site_outage_rate: float = Field(
        12.0, ge=0, le=100_000, description="network outages per site per year"
    )
    site_outage_minutes: float = Field(30.0, gt=0, le=525_600, description="their mean length")
    outage_sigma: float = Field(0.8, ge=0, le=3, description="log-normal sigma of outage lengths")
    flush_probability: float = Field(
        0.8, ge=0, le=1, description="a device buffers readings through a site outage"
    )
    buffer_readings: int = Field(500, ge=0, le=1_000_000, description="readings it can buffer")
    alert_samples: int = Field(
        3, ge=1, le=1000, description="consecutive readings above the limit to raise an alert"
    )
    daily_cycle: float = Field(1.0, ge=0, le=10, description="strength of the daily cycle")
    incidents: list[IncidentSpec] = Field(
        default_factory=list, description="edge cases to inject (ground truth)"
    )

    @model_validator(mode="after")
    def _steps(self) -> IotParams:
        shortest = min(t.heartbeat_s for t in TYPES) * self.heartbeat_scale
        if self.step_seconds > shortest:
            raise ValueError(
                f"step_seconds must be <= the shortest heartbeat interval ({shortest:g} s)"
            )
        for i, inc in enumerate(self.incidents):
            if inc.device is not None and int(inc.device[1:]) > self.devices:
                raise ValueError(
                    f"incidents[{i}].device {inc.device} does not exist: "
                    f"devices are D000001..D{self.devices:06d}"
                )
        return self


class IotPack(Pack):
    name = "iot"
    description = "Sensor fleet: telemetry with physics, heartbeats, outages, alerts, incidents."
    Params = IotParams
    clock_driven = True
    streams: ClassVar[dict[str, StreamSpec]] = {
        "telemetry": StreamSpec(
            "telemetry", "A sensor reading (late when flushed after a site outage).", driven=True
        ),
        "heartbeat": StreamSpec(
            "heartbeat", "A device's periodic sign of life, with its battery.", driven=True
        ),
        "alert": StreamSpec(
            "alert", "A threshold alert raised or cleared (hysteresis, debounce).", driven=True
        ),
        "device_status": StreamSpec(
            "device_status", "A device online (registered, back) or offline.", driven=True
        ),
    }

    shardable = True

    @classmethod
    def questions(cls, params: BaseModel) -> tuple[Question, ...]:
        return QUESTIONS

    @classmethod
    def max_shards(cls, params: BaseModel) -> int:
        return int(min(params.devices, params.sites))  # type: ignore[attr-defined]

    def __init__(self, params: BaseModel, seeds: SeedTree, shard: Shard | None = None) -> None:
        super().__init__(params, seeds, shard)
        p = params if isinstance(params, IotParams) else IotParams.model_validate(params)
        # a shard: its own devices and sites (an independent part of the fleet, global ids);
        # incidents on a named device go to its shard, random ones by share (timed: shard 0)
        sh = self.shard
        d_lo, d_hi = sh.range(p.devices)
        s_lo, s_hi = sh.range(p.sites)
        if sh.count > 1:
            if d_hi <= d_lo or s_hi <= s_lo:
                raise ValueError(f"iot: {sh.count} shards need at least as many devices and sites")
            share = (d_hi - d_lo) / p.devices
            mine = []
            for inc in p.incidents:
                if inc.device is not None:
                    if d_lo < int(inc.device[1:]) <= d_hi:
                        mine.append(inc)
                elif inc.rate_per_day:
                    mine.append(inc.model_copy(update={"rate_per_day": inc.rate_per_day * share}))
                elif sh.index == 0:
                    mine.append(inc)
            p = p.model_copy(
                update={"devices": d_hi - d_lo, "sites": s_hi - s_lo, "incidents": mine}
            )
            self.shard_share = share
        self.p = p
        self.fleet = Fleet(
            p,
            seeds.rng("iot", "fleet", *sh.tag),
            seeds.rng("iot", "signals", *sh.tag),
            list(p.incidents),
            device_offset=d_lo,
            site_offset=s_lo,
            number_base=0 if sh.count == 1 else sh.index * 10**12,
        )
        f = self.fleet
        for i, inc in enumerate(p.incidents):
            if inc.kind == "thermal_runaway" and inc.device is not None:
                t = TYPE_NAMES[f.type[f.device_ids.index(inc.device)]]
                if t != "thermal":
                    raise ValueError(
                        f"incidents[{i}]: thermal_runaway needs a thermal device; "
                        f"{inc.device} is a {t} sensor"
                    )
        self.metrics = tuple(t.metric for t in TYPES)
        self.units = tuple(t.unit for t in TYPES)

    def begin(self, now_us: int) -> None:
        """The fleet (its devices' registrations) begins with the run."""
        self.fleet.begin(now_us)

    def advance(self, now_us: int) -> None:
        """The fleet's whole steps up to ``now_us`` (a batch's window closing: its last
        step's readings are made, as a stream run's last poll makes them)."""
        self.fleet.advance(now_us)

    def stream(self, name: str) -> StreamGenerator:
        if name not in self.streams:
            raise KeyError(f"iot has no stream {name!r}; streams: {sorted(self.streams)}")
        self.fleet.emit[name] = True
        return _GENERATORS[name](self)


class _Driven(StreamGenerator):
    stream_name: ClassVar[str]

    def __init__(self, pack: IotPack) -> None:
        self.pack = pack
        self.schema = pack.schema_for(self.stream_name)
        self.buffer = {
            "telemetry": pack.fleet.telemetry,
            "heartbeat": pack.fleet.heartbeats,
            "alert": pack.fleet.alerts,
            "device_status": pack.fleet.status,
        }[self.stream_name]

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        ev = self.pack.fleet.due(until_us, limit, final, self.buffer)
        if ev is None:
            return None
        dev = ev["device"]
        return self.block(ev, dev, np.arange(seq_start, seq_start + len(dev), dtype=np.int64))

    def device_columns(self, dev: Any) -> dict[str, Any]:
        f = self.pack.fleet
        return {
            "device_id": DictColumn(dev.astype(np.int32), f.device_ids),
            "site_id": DictColumn(f.site[dev], f.site_ids),
        }

    def block(self, ev: dict[str, Any], dev: Any, seq: Any) -> RecordBlock:
        raise NotImplementedError


class Telemetry(_Driven):
    stream_name = "telemetry"

    def block(self, ev: dict[str, Any], dev: Any, seq: Any) -> RecordBlock:
        pk, f = self.pack, self.pack.fleet
        kind = f.type[dev]
        labels = []
        for k, name in enumerate(INCIDENTS):
            rows = np.flatnonzero(ev["label"] == k)
            if len(rows):
                details = [
                    {"incident": name, "incident_id": int(i), "device": f.device_ids[d]}
                    for i, d in zip(ev["incident"][rows].tolist(), dev[rows].tolist(), strict=True)
                ]
                labels.append(Label(name, rows, details))
        return RecordBlock(
            stream="iot.telemetry",
            seq=seq,
            event_time=ev["event_time"],
            key=dev.astype(np.int64) + f.device_offset,  # global across shards
            columns={
                **self.device_columns(dev),
                "device_type": DictColumn(kind, TYPE_NAMES),
                "metric": DictColumn(kind, pk.metrics),
                "value": ev["value"].astype(np.float64),
                "unit": DictColumn(kind, pk.units),
                "reading_seq": ev["seq"],
                "sent_at": ev["t"],
            },
            labels=tuple(labels),
        )


class Heartbeats(_Driven):
    stream_name = "heartbeat"

    def block(self, ev: dict[str, Any], dev: Any, seq: Any) -> RecordBlock:
        f = self.pack.fleet
        return RecordBlock(
            stream="iot.heartbeat",
            seq=seq,
            event_time=ev["t"],
            key=dev.astype(np.int64) + f.device_offset,  # global across shards
            columns={
                **self.device_columns(dev),
                "battery_pct": ev["battery"].astype(np.float64),
                "firmware": DictColumn(f.firmware[dev], FIRMWARE),
                "rssi_dbm": ev["rssi"],
                "uptime_s": ev["uptime"].astype(np.int64),
            },
        )


class Alerts(_Driven):
    stream_name = "alert"

    def block(self, ev: dict[str, Any], dev: Any, seq: Any) -> RecordBlock:
        pk, f = self.pack, self.pack.fleet
        kind = f.type[dev]
        return RecordBlock(
            stream="iot.alert",
            seq=seq,
            event_time=ev["event_time"],
            key=dev.astype(np.int64) + f.device_offset,  # global across shards
            columns={
                "alert_id": ev["alert_id"],
                "alert_type": DictColumn(
                    ev["kind"].astype(np.int32), ("alert_raised", "alert_cleared")
                ),
                **self.device_columns(dev),
                "metric": DictColumn(kind, pk.metrics),
                "value": ev["value"].astype(np.float64),
                "threshold": ev["threshold"].astype(np.float64),
                "reading_seq": ev["seq"],
            },
        )


class DeviceStatus(_Driven):
    stream_name = "device_status"

    def block(self, ev: dict[str, Any], dev: Any, seq: Any) -> RecordBlock:
        f = self.pack.fleet
        status = ev["status"].astype(np.int32)
        offline = np.flatnonzero(status == 1)
        labels: tuple[Label, ...] = ()
        if len(offline):
            causes = ev["cause"][offline].tolist()
            labels = (
                Label(
                    "device_offline",
                    offline,
                    [{"cause": OUTAGE_CAUSES[c], "device": f.device_ids[d]}
                     for c, d in zip(causes, dev[offline].tolist(), strict=True)],
                ),
            )  # fmt: skip
        never = ev["last_hb"] == 0
        return RecordBlock(
            stream="iot.device_status",
            seq=seq,
            event_time=ev["t"],
            key=dev.astype(np.int64) + f.device_offset,  # global across shards
            columns={
                **self.device_columns(dev),
                "event_type": DictColumn(status, STATUSES),
                "region": DictColumn(f.site_region[f.site[dev]], REGIONS),
                "device_type": DictColumn(f.type[dev], TYPE_NAMES),
                "model": DictColumn(f.model[dev], MODELS),
                "firmware": DictColumn(f.firmware[dev], FIRMWARE),
                "installed_at": f.installed_us[dev],
                "last_heartbeat_at": ev["last_hb"],
            },
            nulls={"last_heartbeat_at": never},
            labels=labels,
        )


_GENERATORS: dict[str, type[_Driven]] = {
    "telemetry": Telemetry,
    "heartbeat": Heartbeats,
    "alert": Alerts,
    "device_status": DeviceStatus,
}
