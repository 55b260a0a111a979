"""IoT: alerts replay from telemetry, heartbeat loss rates and durations, offline/online from
heartbeat gaps, a scheduled thermal runaway end to end, late flushed readings — all checked
from the files a simulated run wrote (and its ground-truth manifest)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from datafactory.config import ConfigError, parse_config
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.engine import Engine
from datafactory_iot import IotPack, IotParams
from datafactory_iot.fleet import TYPES

START = "2026-03-02T00:00:00Z"
S = 1_000_000


def _us(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * S)


def _times(rows: list[Any], field: str) -> Any:
    """µs since the epoch of ``field`` in every row (vectorised)."""
    return np.array([r[field][:-1] for r in rows], dtype="datetime64[us]").astype(np.int64)


STREAMS = ("telemetry", "heartbeat", "alert", "device_status")


def run(
    out: Path,
    params: dict[str, Any],
    duration: str,
    seed: int = 7,
    streams: tuple[str, ...] = STREAMS,
) -> dict[str, list[Any]]:
    cfg = {
        "run": {"name": "iot", "seed": seed, "clock": "simulated", "start": START,
                "duration": duration},
        "packs": {"iot": {"params": params, "streams": {s: {} for s in streams}}},
        "sinks": {"out": {"type": "file", "path": str(out)}},
        "manifest": {"sink": {"type": "file", "path": str(out / "truth")}},
        "telemetry": {"enabled": False},
    }  # fmt: skip
    asyncio.run(Engine(parse_config(orjson.dumps(cfg).decode())).run())
    got: dict[str, list[Any]] = {}
    for name in streams:
        got[name] = [
            orjson.loads(x)
            for f in sorted((out / "iot" / name).glob("*.jsonl"))
            for x in f.read_bytes().splitlines()
        ]
    got["truth"] = [
        orjson.loads(x)
        for f in sorted((out / "truth").rglob("*.jsonl"))
        for x in f.read_bytes().splitlines()
    ]
    return got


LIMITS = {t.metric: (t.limit, t.clear) for t in TYPES}


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """Two simulated days of 300 devices with frequent outages of both kinds, buffering and
    flushing, and every incident kind."""
    params = {
        "devices": 300, "sites": 8, "site_outage_rate": 400, "site_outage_minutes": 40,
        "device_outage_rate": 60, "device_outage_hours": 2, "flush_probability": 0.7,
        "battery_days": 20,
        "incidents": [
            {"kind": "thermal_runaway", "rate_per_day": 2},
            {"kind": "stuck_at", "rate_per_day": 4, "duration": "3h"},
            {"kind": "drift", "rate_per_day": 4, "magnitude": 3, "duration": "6h"},
            {"kind": "clock_skew", "rate_per_day": 4, "duration": "2h"},
        ],
    }  # fmt: skip
    return run(tmp_path_factory.mktemp("busy"), params, "2d")


def test_every_alert_follows_from_the_readings_by_the_documented_rule(busy) -> None:  # type: ignore[no-untyped-def]
    by_device: dict[str, list[Any]] = defaultdict(list)
    for r in busy["telemetry"]:
        by_device[r["device_id"]].append(r)
    derived = set()
    samples = IotParams().alert_samples
    for device, rows in by_device.items():
        rows.sort(key=lambda r: r["reading_seq"])  # measurement order
        limit, clear = LIMITS[rows[0]["metric"]]
        beyond, raised = 0, False
        for r in rows:
            beyond = beyond + 1 if r["value"] > limit else 0
            if not raised and beyond >= samples:
                raised = True
                derived.add((device, r["reading_seq"], "alert_raised", r["value"]))
            elif raised and r["value"] < clear:
                raised = False
                derived.add((device, r["reading_seq"], "alert_cleared", r["value"]))
    alerts = {
        (a["device_id"], a["reading_seq"], a["alert_type"], a["value"]) for a in busy["alert"]
    }
    assert len(alerts) == len(busy["alert"]) > 20
    assert alerts == derived
    assert {a["device_id"] for a in busy["alert"]} <= set(by_device)


def test_offline_and_online_match_heartbeat_gaps_exactly(busy) -> None:  # type: ignore[no-untyped-def]
    p = IotParams()
    hb = {t.name: t.heartbeat_s * S for t in TYPES}
    kind = {s["device_id"]: s["device_type"] for s in busy["device_status"]}
    start = _us(START)
    end = start + 2 * 86_400 * S
    beats: dict[str, list[int]] = defaultdict(list)
    for h in busy["heartbeat"]:
        beats[h["device_id"]].append(_us(h["event_time"]))
    derived = set()
    devices = {s["device_id"] for s in busy["device_status"]}
    for d in devices:
        last = start
        window = p.offline_after_missed * hb[kind[d]]
        for h in sorted(beats[d]):
            if h - last > window:
                derived.add((d, "device_offline", last + window))
                derived.add((d, "device_online", h))
            last = h
        if end - last > window:
            derived.add((d, "device_offline", last + window))
    got = {
        (s["device_id"], s["event_type"], _us(s["event_time"]))
        for s in busy["device_status"]
        if s["last_heartbeat_at"] is not None  # not the registration at the start
    }
    # the run's last minutes: a heartbeat after the end is not in the stream
    cut = end - 10 * 60 * S
    assert {x for x in got if x[2] < cut} == {x for x in derived if x[2] < cut}
    assert sum(1 for x in got if x[1] == "device_offline") > 100
    registered = [s for s in busy["device_status"] if s["last_heartbeat_at"] is None]
    assert len(registered) == 300
    assert {s["event_type"] for s in registered} == {"device_online"}


def test_offline_events_carry_their_cause_as_ground_truth(busy) -> None:  # type: ignore[no-untyped-def]
    causes = {r["detail"]["cause"] for r in busy["truth"] if r.get("kind") == "device_offline"}
    assert {"site_network", "hardware_fault", "failed"} <= causes
    offline = sum(1 for s in busy["device_status"] if s["event_type"] == "device_offline")
    assert sum(1 for r in busy["truth"] if r.get("kind") == "device_offline") == offline


def test_late_flushed_readings_keep_their_measurement_time(busy) -> None:  # type: ignore[no-untyped-def]
    rows = busy["telemetry"]
    late = [i for i, r in enumerate(rows) if r["sent_at"] != r["event_time"]]
    skewed = {(r["detail"]["device"]) for r in busy["truth"] if r.get("kind") == "clock_skew"}
    late = [i for i in late if rows[i]["device_id"] not in skewed]
    assert len(late) > 500
    sent, measured = _times(rows, "sent_at"), _times(rows, "event_time")
    assert (np.diff(sent) >= 0).all()  # the stream is in arrival order
    newest = np.maximum.accumulate(measured)
    idx = np.array(late)
    assert (measured[idx] < sent[idx]).all()
    overtaken = newest[idx - 1] > measured[idx]  # a newer reading arrived first
    assert overtaken.mean() > 0.9  # (the few others were measured just before it)
    # per device, measurement order is reading_seq order (times keep their order)
    device = np.array([r["device_id"] for r in rows])
    rseq = np.array([r["reading_seq"] for r in rows])
    plain = ~np.isin(device, list(skewed))
    order = np.lexsort((rseq[plain], device[plain]))
    d, t = device[plain][order], measured[plain][order]
    same = d[1:] == d[:-1]
    assert (np.diff(t)[same] > 0).all()


def test_incidents_are_in_the_ground_truth(busy) -> None:  # type: ignore[no-untyped-def]
    kinds = {r.get("kind") for r in busy["truth"]}
    assert {"thermal_runaway", "stuck_at", "drift", "clock_skew"} <= kinds
    # a stuck sensor repeats one value for the whole incident
    stuck: dict[int, set[float]] = defaultdict(set)
    by_seq = {r_seq: r for r_seq, r in enumerate(busy["telemetry"])}
    for r in busy["truth"]:
        if r.get("kind") == "stuck_at":
            assert r["stream"] == "iot.telemetry"
            stuck[r["detail"]["incident_id"]].add(by_seq[r["seq"]]["value"])
    assert stuck and all(len(v) == 1 for v in stuck.values())


def test_a_scheduled_thermal_runaway_ramps_alerts_fails_and_goes_silent(tmp_path: Path) -> None:
    pack = IotPack(IotParams(devices=60, sites=3), SeedTree(5))
    thermal = int(np.flatnonzero(pack.fleet.type == 0)[0])
    device = pack.fleet.device_ids[thermal]
    params = {
        "devices": 60, "sites": 3, "site_outage_rate": 0, "device_outage_rate": 0,
        "battery_days": 10_000,
        "incidents": [{"kind": "thermal_runaway", "at": "2h", "device": device,
                       "magnitude": 0.5}],
    }  # fmt: skip
    got = run(tmp_path, params, "6h", seed=5)
    t0 = _us(START) + 2 * 3600 * S
    mine = [r for r in got["telemetry"] if r["device_id"] == device]
    before = [r["value"] for r in mine if _us(r["event_time"]) < t0]
    ramp = [r for r in mine if _us(r["event_time"]) >= t0]
    assert np.mean(before) < 55 and len(ramp) > 100
    # the ramp: about 0.5 degrees a minute over the noise, up to the fail level (90)
    mins = (np.array([_us(r["event_time"]) for r in ramp]) - t0) / 60e6
    slope = np.polyfit(mins, [r["value"] for r in ramp], 1)[0]
    assert 0.4 < slope < 0.6
    assert ramp[-1]["value"] >= 90 and all(r["value"] < 90 for r in ramp[:-1])
    failed_at = _us(ramp[-1]["event_time"])
    # the alert, before the failure
    raised = [a for a in got["alert"] if a["device_id"] == device]
    assert raised and raised[0]["alert_type"] == "alert_raised"
    assert t0 < _us(raised[0]["event_time"]) < failed_at
    # silence: nothing more from it, and it goes offline (for good)
    beats = [_us(h["event_time"]) for h in got["heartbeat"] if h["device_id"] == device]
    assert max(beats) <= failed_at
    status = [s for s in got["device_status"] if s["device_id"] == device]
    assert [s["event_type"] for s in status] == ["device_online", "device_offline"]
    # ground truth: the ramp's readings, one incident on this device, and the failure
    truth = [r for r in got["truth"] if r.get("kind") == "thermal_runaway"]
    assert {r["detail"]["device"] for r in truth} == {device}
    assert len(truth) == len(ramp)
    offline = [r for r in got["truth"] if r.get("kind") == "device_offline"]
    assert [r["detail"] for r in offline] == [{"cause": "failed", "device": device}]


def test_outage_rates_and_durations_follow_the_config(tmp_path: Path) -> None:
    """Site network outages (then device outages alone): counted and measured from the
    heartbeat stream, against the configured rate and mean length (+-20%)."""

    def gaps(rows: list[Any]) -> list[tuple[str, int, int]]:
        """(site, last heartbeat before, first after minus one interval) of every gap."""
        beats: dict[str, list[int]] = defaultdict(list)
        site: dict[str, str] = {}
        for h in rows:
            beats[h["device_id"]].append(_us(h["event_time"]))
            site[h["device_id"]] = h["site_id"]
        out = []
        for d, ts in beats.items():
            ts.sort()
            hb = int(np.median(np.diff(ts)))  # the device's own interval
            for a, b in itertools.pairwise(ts):
                if b - a > 1.5 * hb:
                    out.append((site[d], a, b - hb))
        return out

    days = 5
    site_cfg = {"devices": 200, "sites": 20, "site_outage_rate": 600, "site_outage_minutes": 40,
                "device_outage_rate": 0, "battery_days": 10_000, "step_seconds": 30}  # fmt: skip
    got = run(tmp_path / "site", site_cfg, f"{days}d", streams=("heartbeat",))
    # a site outage silences every device of the site at once: one cluster per (site, start)
    clusters: dict[tuple[str, int], list[int]] = defaultdict(list)
    for s, a, b in gaps(got["heartbeat"]):
        clusters[(s, a // (5 * 60 * S))].append(b - a)
    expected = 600 * 20 * days / 365
    assert abs(len(clusters) - expected) < 0.2 * expected, (len(clusters), expected)
    mean_min = np.mean([np.median(v) for v in clusters.values()]) / 60e6
    assert abs(mean_min - 40) < 0.2 * 40, mean_min
    dev_cfg = {"devices": 300, "sites": 5, "site_outage_rate": 0, "device_outage_rate": 120,
               "device_outage_hours": 3, "battery_days": 10_000, "step_seconds": 30}  # fmt: skip
    got = run(tmp_path / "dev", dev_cfg, f"{days}d", streams=("heartbeat",))
    g = gaps(got["heartbeat"])
    expected = 120 * 300 * days / 365
    assert abs(len(g) - expected) < 0.2 * expected, (len(g), expected)
    mean_h = np.mean([b - a for _, a, b in g]) / 3600e6
    assert abs(mean_h - 3) < 0.2 * 3, mean_h


def test_same_seed_same_fleet_data(tmp_path: Path) -> None:
    params = {"devices": 80, "sites": 4, "site_outage_rate": 300,
              "incidents": [{"kind": "drift", "rate_per_day": 5}]}  # fmt: skip
    a = run(tmp_path / "a", params, "8h")
    b = run(tmp_path / "b", params, "8h")
    # the manifest interleaves streams as they were written: the same facts, in some order
    for got in (a, b):  # (its run entries say when they were written: not data)
        got["truth"] = sorted(
            (r for r in got["truth"] if r["type"] == "fault"),
            key=lambda r: (r["stream"], r["seq"]),
        )
    assert a == b and len(a["telemetry"]) > 10_000
    c = run(tmp_path / "c", params, "8h", seed=8)
    assert c["telemetry"] != a["telemetry"]


def test_bad_params_name_what_and_where() -> None:
    with pytest.raises(ValidationError) as e:
        IotParams.model_validate({"step_seconds": 60, "heartbeat_scale": 0.5})
    assert "step_seconds must be <= the shortest heartbeat interval (15 s)" in str(e.value)
    with pytest.raises(ValidationError) as e:
        IotParams.model_validate({"incidents": [{"kind": "meltdown", "at": "1h"}]})
    assert "incidents.0.kind" in str(e.value)
    with pytest.raises(ValidationError) as e:
        IotParams.model_validate({"incidents": [{"kind": "drift"}]})
    assert "exactly one of `at` or `rate_per_day`" in str(e.value)
    with pytest.raises(ValidationError) as e:
        IotParams.model_validate(
            {"devices": 10, "incidents": [{"kind": "drift", "at": 5, "device": "D000011"}]}
        )
    assert "D000011 does not exist" in str(e.value)
    with pytest.raises(ConfigError) as ce:
        parse_config("run: {clock: simulated}\npacks: {iot: {}}\nsinks: {o: {type: stdout}}\n")
    assert "run.duration" in str(ce.value)


def test_readings_of_one_site_move_together() -> None:
    """The site's ambient is shared: hourly means of thermal devices correlate within a site
    far more than across sites; each device stays around its set point."""
    pack = IotPack(
        IotParams(devices=120, sites=4, site_outage_rate=0, device_outage_rate=0,
                  battery_days=10_000, daily_cycle=0, step_seconds=30),
        SeedTree(3),
    )  # fmt: skip
    pack.stream("telemetry")
    f = pack.fleet
    t0 = _us(START)
    f.advance(t0)
    f.advance(t0 + 3 * 86_400 * S)
    ev = f.take_due(t0 + 3 * 86_400 * S, 10**9, True, f.telemetry)
    assert ev is not None
    thermal = np.flatnonzero(f.type == 0)
    hour = (ev["measured"] - t0) // (3600 * S)
    means = np.array(
        [
            [ev["value"][(ev["device"] == d) & (hour == h)].mean() for h in range(72)]
            for d in thermal
        ]
    )
    assert abs(means.mean() - 45) < 2  # the set point
    c = np.corrcoef(means)
    same = f.site[thermal][:, None] == f.site[thermal][None, :]
    off_diag = ~np.eye(len(thermal), dtype=bool)
    assert c[same & off_diag].mean() > c[~same].mean() + 0.2
