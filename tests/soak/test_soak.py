"""Soak: the daemon at a steady rate with chaos on, against Tansu (Kafka, its log kept in moto's
S3 so the broker can restart) and moto (S3), through kill -9s, a reload every minute (valid
and invalid in turn) and two broker restarts; at the end ``verify`` finds every event, and the
daemon's memory growth is reported.

``-m soak``: an hour (``DATAFACTORY_SOAK_SECONDS`` to change it), a kill -9 every five
minutes. The default suite runs the same test for 100 s, a kill -9 every 30 s (two or three
kills, two broker restarts, a valid reload at 60 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.lifecycle.local import Moto, Tansu
from datafactory.verify import verify
from tests.integration.test_daemon_process import Serve
from tests.soak.follow import Follower

ROOT = Path(__file__).resolve().parents[2]
AWS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}

CONFIG = """
run: {{name: soak{uid}, seed: 77, duration: {seconds}s}}
packs:
  retail:
    params: {{stores: 10, skus: 500, customers: 5000}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}}}
      customer_event: {{}}
sinks:
  bus: {{type: kafka, bootstrap: "{bootstrap}", topic: "soak-{uid}.{{stream}}", partitions: 2,
         delivery_timeout: 10s}}
  lake: {{type: aws_s3, endpoint_url: "{endpoint}", bucket: "soak-{uid}", prefix: events/}}
chaos:
  - {{step: drop, rate: 0.01}}
  - {{step: duplicate, rate: 0.01}}
manifest: {{sink: {{type: file, path: "{manifest}"}}, flush: 1s}}
# one slice a second: Tansu keeps each produced batch as an object in moto's S3, and reads
# them back one by one, so small batches make verify's read of the topic crawl
engine: {{snapshot_interval: 30s, pacing_interval: 1s}}
"""


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def slope_mib_per_hour(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time (MiB/h)."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mt) * (r - mr) for t, r in samples)
    return cov / var * 3600 / 1024


def soak(tmp_path: Path, moto: Moto, seconds: int, kill_every: float) -> dict[str, Any]:
    rng = random.Random(seconds)
    uid = uuid.uuid4().hex[:8]
    os.environ.update(AWS)
    asyncio.run(_bucket(moto.endpoint, f"tansu-{uid}"))
    broker = Tansu(storage=f"s3://tansu-{uid}/", s3_endpoint=moto.endpoint)
    broker.start()
    streams = ("retail.pos_transaction", "retail.customer_event")
    topics = {f"soak-{uid}.{s.split('.')[1]}": s for s in streams}  # the sink's topic names
    follower = Follower(broker.bootstrap, topics, tmp_path / "bus")
    follower.start()
    d = Serve(tmp_path, {"DATAFACTORY_STATE_DIR": str(tmp_path / "state"), **AWS})
    args = dict(
        uid=uid,
        seconds=seconds,
        bootstrap=broker.bootstrap,
        endpoint=moto.endpoint,
        manifest=tmp_path / "manifest",
    )
    cfg_path = d.configs / "soak.yaml"
    cfg_path.write_text(CONFIG.format(rate=100, **args))
    segments: list[list[tuple[float, int]]] = []
    kills = reloads = rejected = 0
    try:
        d.start()
        rid = d.post("/v1/runs", {"config": "soak"})["id"]
        t0 = time.monotonic()
        segments.append([])
        next_kill = t0 + kill_every * rng.uniform(0.7, 1.3)
        next_reload = t0 + 60
        restarts = [t0 + seconds / 3, t0 + 2 * seconds / 3]
        while time.monotonic() - t0 < seconds - 10:
            time.sleep(5)
            now = time.monotonic()
            assert d.proc is not None
            r = rss_kib(d.proc.pid)
            if r is not None:
                segments[-1].append((now - t0, r))
            if restarts and now >= restarts[0]:  # the broker goes away for a few seconds
                restarts.pop(0)  # (stopped, not killed: what an acked record survives is
                broker.stop()  # Tansu's own matter; a kill -9 lost one here once)
                time.sleep(3)
                broker.start()
            if now >= next_reload:  # valid and invalid in turn, by SIGHUP
                reloads += 1
                if reloads % 2:
                    cfg_path.write_text(CONFIG.format(rate=rng.choice([80, 100, 120]), **args))
                else:
                    cfg_path.write_text("run: [this is not, a config\n")
                    rejected += 1
                d.proc.send_signal(signal.SIGHUP)
                next_reload = now + 60
            if now >= next_kill:
                kills += 1
                d.stop(signal.SIGKILL)
                cfg_path.write_text(CONFIG.format(rate=100, **args))  # a valid file to start
                d.start()
                segments.append([])
                next_kill = now + kill_every * rng.uniform(0.7, 1.3)
        metrics = scrape(d.port)
        view = d.wait(rid, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=300)
    finally:
        d.stop()
        broker_bootstrap = broker.bootstrap
    try:
        assert view["state"] == "COMPLETED", d.logs()
        os.environ["AWS_ENDPOINT_URL"] = moto.endpoint
        cfg = parse_config(CONFIG.format(rate=100, **args))
        verify_started = time.monotonic()
        # the topics were read while the run went on (see follow.py): here to their end; if
        # that fails, the lake is still checked and the figures written, then the test fails
        follow_error = None
        try:
            follower.finish(within=600)
        except Exception as e:
            follow_error = repr(e)
        follow_seconds = time.monotonic() - verify_started
        report = asyncio.run(
            verify(
                cfg,
                quiet=5.0,
                source_overrides={"bus": f"{tmp_path}/bus/{{stream}}"},
                only_sinks=["lake"] if follow_error else None,
            )
        )
        verify_seconds = time.monotonic() - verify_started
    finally:
        broker.stop()
        os.environ.pop("AWS_ENDPOINT_URL", None)
    slopes = [
        s
        for seg in segments
        if (s := slope_mib_per_hour([x for x in seg if x[0] - seg[0][0] >= 60] if seg else []))
        is not None
    ]
    longest = max(segments, key=len)
    summary = {
        "seconds": seconds,
        "kills": kills,
        "reloads": reloads,
        "reloads_rejected": rejected,
        "broker": broker_bootstrap,
        "released": {k: v["released"] for k, v in view["streams"].items()},
        # what each sink acknowledged, by the ledger (beside what reading it back found)
        "acked": {f"{c['sink']}/{c['stream']}": c["acked"] for c in view["counters"]},
        "verify_seconds": round(verify_seconds, 1),
        "of_which_kafka_to_its_end_seconds": round(follow_seconds, 1),
        "kafka_records_followed": follower.records,
        "kafka_follow_error": follow_error,
        "follower_trace": follower.trace,
        "sinks": {
            sink: {st: {k: row[k] for k in SUMMARY} for st, row in streams.items()}
            for sink, streams in report["sinks"].items()
        },
        "rss_mib_last": longest[-1][1] / 1024 if longest else None,
        "rss_slope_mib_per_hour": {
            "per_process_after_warmup": [round(s, 2) for s in slopes],
            "longest_process": slope_mib_per_hour(
                [x for x in longest if x[0] - longest[0][0] >= 60]
            ),
        },
        "reload_failures_metric": metrics.get("datafactory_config_reload_failures_total"),
    }
    out = ROOT / "artifacts" / f"soak-{seconds}s.json"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    for sink, streams in report["sinks"].items():
        for st, row in streams.items():
            assert row["missing"] == 0 and row["delivered"] > 0, (sink, st, row)
    assert follow_error is None, follow_error
    assert kills >= 1 and reloads >= 1
    return summary


SUMMARY = ("delivered", "missing", "missing_sample", "shed", "duplicated_beyond")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line.split(" ")[0]:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


async def _bucket(endpoint: str, name: str) -> None:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    async with session.create_client("s3", endpoint_url=endpoint, region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket=name)


@pytest.mark.soak
def test_soak_an_hour(tmp_path: Path, moto: Moto) -> None:
    seconds = int(os.environ.get("DATAFACTORY_SOAK_SECONDS", "3600"))
    soak(tmp_path, moto, seconds, kill_every=300)


@pytest.mark.timed
@pytest.mark.integration
def test_soak_short(tmp_path: Path, moto: Moto) -> None:
    soak(tmp_path, moto, 100, kill_every=30)
