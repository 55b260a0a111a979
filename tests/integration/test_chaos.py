"""Chaos end to end: a run with faults at known rates into a real broker and into files,
a reference platform with a DLQ on Tansu, and ``verify`` accounting for every event."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.lifecycle.local import Tansu
from datafactory.runtime.engine import Engine
from datafactory.schema import load_schema
from datafactory.verify import Thresholds, verify
from tests.reference_platform import run_platform

pytestmark = pytest.mark.integration

CHAOS = """
chaos:
  - {{step: drop, rate: 0.01}}
  - {{step: duplicate, rate: 0.01}}
  - {{step: delay, rate: 0.01, min: 100ms, max: 600ms}}
  - {{step: schema_drift, rate: 0.01}}
  - {{step: corrupt_value, rate: 0.01}}
  - {{step: corrupt_bytes, rate: 0.01}}
  - {{step: poison_pill, rate: 0.005}}
  - {{step: timestamp_skew, rate: 0.01}}
  - {{step: oversize, rate: 0.002}}
  - {{step: hot_key, rate: 0.01}}
"""

KAFKA = (
    """
run: {{name: {run}, seed: 11}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 6000}}, max_events: {n}}}
sinks:
  bus: {{type: kafka, bootstrap: "{bootstrap}", format: json, topic: "{raw}", partitions: 3}}
manifest: {{sink: {{type: kafka, bootstrap: "{bootstrap}", topic: "{manifest}"}}, flush: 200ms}}
telemetry: {{enabled: false}}
"""
    + CHAOS
)


async def _topics(bootstrap: str, *names: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 3, 1) for n in names])
    finally:
        await admin.close()


async def test_verify_accounts_for_every_event_through_a_real_platform(tansu: Tansu) -> None:
    uid = uuid.uuid4().hex[:8]
    raw, manifest = f"raw-{uid}", f"manifest-{uid}"
    cfg = parse_config(
        KAFKA.format(run=f"k{uid}", n=15_000, bootstrap=tansu.bootstrap, raw=raw, manifest=manifest)
    )
    summary = await Engine(cfg).run()
    # oversize records are refused by the sink on purpose, and only those
    failed = summary["sinks"]["bus"]["failed"]["retail.pos_transaction"]
    assert failed == summary["failed_intentionally"] > 0
    schema = load_schema("retail.pos_transaction")
    k = f"kafka://{tansu.bootstrap}"

    # a platform that works: everything is accepted, rejected, or an intentional drop
    await _topics(tansu.bootstrap, f"ok-{uid}", f"dlq-{uid}")
    good = await run_platform(tansu.bootstrap, raw, f"ok-{uid}", f"dlq-{uid}", schema)
    report = await verify(cfg, dlq=f"{k}/dlq-{uid}", accepted=f"{k}/ok-{uid}", quiet=2.0)
    t = report["sinks"]["bus"]["retail.pos_transaction"]
    p = report["platform"]["retail.pos_transaction"]
    assert report["manifest_final"]
    assert t["released"] == 15_000
    assert t["missing"] == 0 and t["duplicated_beyond"] == 0 and t["unidentified"] == 0
    assert t["dropped_intentionally"] > 100 and t["duplicated_intentionally"] > 100
    assert t["rejected_oversize_intentionally"] == failed
    assert p["unaccounted"] == 0 and p["clean_lost"] == 0 and p["faulty_lost"] == 0
    # the validator knows nothing of the manifest, yet rejects exactly the faulty events
    assert p["faulty_reached"] == len(good.invalid) > 500
    assert p["caught"] == len(good.invalid) and p["false_positives"] == 0
    assert p["recall"] == 1.0 and p["precision"] == 1.0
    assert report["failures"] == []
    assert all(row["recall"] == 1.0 for row in p["by_fault"].values())

    # a platform that loses 0.1% of clean records and lets 1% of bad ones through
    await _topics(tansu.bootstrap, f"ok2-{uid}", f"dlq2-{uid}")
    bad = await run_platform(
        tansu.bootstrap, raw, f"ok2-{uid}", f"dlq2-{uid}", schema, lose_every=1000, leak_every=100
    )
    assert bad.lost and bad.leaked
    report = await verify(
        cfg,
        dlq=f"{k}/dlq2-{uid}",
        accepted=f"{k}/ok2-{uid}",
        quiet=2.0,
        thresholds=Thresholds(min_recall={"": 0.999}),
    )
    p = report["platform"]["retail.pos_transaction"]
    assert p["clean_lost"] == len(bad.lost)
    assert p["unaccounted"] == len(bad.lost)
    assert p["faulty_accepted"] == len(bad.leaked)
    assert p["caught"] == len(bad.invalid - bad.leaked)
    assert p["recall"] == (len(bad.invalid) - len(bad.leaked)) / len(bad.invalid)
    assert any("neither accepted nor in the DLQ" in f for f in report["failures"])
    assert any("DLQ recall overall" in f for f in report["failures"])


FILES = (
    """
run: {{name: f1, seed: 5, clock: simulated}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 300}}, max_events: 36000}}
sinks:
  out: {{type: file, path: "{out}"}}
manifest: {{sink: {{type: file, path: "{manifest}"}}, format: {fmt}}}
telemetry: {{enabled: false}}
"""
    + CHAOS
)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_verify_cli_on_files_passes_then_catches_a_lost_line(tmp_path: Path, fmt: str) -> None:
    cfg = tmp_path / "c.yaml"
    out = tmp_path / "out"
    cfg.write_text(FILES.format(out=out, manifest=tmp_path / "m", fmt=fmt))
    cli = [sys.executable, "-m", "datafactory"]
    run = subprocess.run([*cli, "run", str(cfg)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    ok = subprocess.run(
        [*cli, "verify", str(cfg), "--json"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = orjson.loads(ok.stdout)
    t = report["sinks"]["out"]["retail.pos_transaction"]
    assert t["released"] == 36_000 and t["missing"] == 0 and t["unidentified"] == 0
    assert report["identified_by"]["digest"] > 300  # unparseable records named by digest
    drops = report["chaos"]["drop.drop"]
    assert t["delivered"] == 36_000 - drops

    # lose one clean line: verify names it and fails
    (data,) = list((out / "retail" / "pos_transaction").glob("*.jsonl"))
    lines = data.read_bytes().split(b"\n")
    victim = next(i for i, line in enumerate(lines) if b'"event_id"' in line[:20])
    gone = orjson.loads(lines[victim])["event_id"]
    data.write_bytes(b"\n".join(lines[:victim] + lines[victim + 1 :]))
    bad = subprocess.run(
        [*cli, "verify", str(cfg), "--json"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1
    report = orjson.loads(bad.stdout)
    t = report["sinks"]["out"]["retail.pos_transaction"]
    assert t["missing"] == 1
    from datafactory.engine.identity import event_id

    assert event_id(5, "retail.pos_transaction", t["missing_sample"][0]) == gone
    assert "1 events missing" in report["failures"][0]

    # the same output read from elsewhere, named per stream: {stream} in --source
    moved = tmp_path / "copy" / "retail.pos_transaction"
    moved.mkdir(parents=True)
    data.rename(moved / data.name)
    elsewhere = subprocess.run(
        [*cli, "verify", str(cfg), "--json", "--source", f"out={tmp_path}/copy/{{stream}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    t = orjson.loads(elsewhere.stdout)["sinks"]["out"]["retail.pos_transaction"]
    assert t["missing"] == 1 and t["delivered"] == 36_000 - drops - 1


LIVE = """
run: {{name: live, seed: 3}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 2000}}}}
sinks:
  out: {{type: file, path: "{out}"}}
manifest: {{sink: {{type: file, path: "{manifest}"}}, flush: 200ms}}
telemetry: {{enabled: false}}
chaos:
  - {{step: drop, rate: {rate}}}
"""


def test_sighup_changes_chaos_live_and_a_bad_file_changes_nothing(tmp_path: Path) -> None:
    import signal
    import time

    cfg = tmp_path / "live.yaml"
    fill = {"out": tmp_path / "out", "manifest": tmp_path / "m"}
    cfg.write_text(LIVE.format(rate=0.0, **fill))
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "datafactory", "run", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            # a SIGHUP before the run has set its handler would end the process (its default
            # action), as it would any program's: a loaded machine can take seconds to start
            deadline = time.monotonic() + 60
            while b'"run_started"' not in log_path.read_bytes():
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            time.sleep(2.5)
            cfg.write_text(LIVE.format(rate=7, **fill))  # invalid: rejected, run goes on
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            cfg.write_text(LIVE.format(rate=0.25, **fill))
            proc.send_signal(signal.SIGHUP)
            time.sleep(2.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    logs = [orjson.loads(x) for x in log_path.read_bytes().splitlines() if x.startswith(b"{")]
    assert proc.returncode == 0, logs[-5:]
    events = [x["event"] for x in logs]
    rejected = next(x for x in logs if x["event"] == "reload_rejected")
    assert "chaos.0.rate: Input should be less than or equal to 1" in rejected["error"]
    applied = next(x for x in logs if x["event"] == "reload_applied")
    assert applied["applied"] == ["chaos"] and events.index("reload_rejected") < events.index(
        "reload_applied"
    )
    rows = [
        orjson.loads(x)
        for f in (tmp_path / "m").rglob("*.jsonl")
        for x in f.read_bytes().splitlines()
    ]
    drops = sorted(r["seq"] for r in rows if r["type"] == "fault")
    released = max(r["released"] for r in rows if r["type"] == "run")
    # nothing dropped for the first ~3.5 s (7,000 events at 2,000/s), then about a quarter
    assert drops and drops[0] > 5000
    after = released - drops[0]
    assert 0.18 * after < len(drops) < 0.32 * after


AWS = (
    """
run: {{name: aws{uid}, seed: 21, clock: simulated}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 50}}, max_events: 6000}}
sinks:
  lake: {{type: aws_s3, endpoint_url: "{endpoint}", bucket: "lake-{uid}", prefix: raw/}}
  kin: {{type: aws_kinesis, endpoint_url: "{endpoint}", stream: "kin-{uid}", shards: 2,
         max_in_flight: 1, rejects_path: "{rejects}"}}
manifest:
  sink: {{type: aws_s3, endpoint_url: "{endpoint}", bucket: "truth-{uid}", prefix: m/}}
  format: parquet
telemetry: {{enabled: false}}
"""
    + CHAOS
)


async def test_verify_reads_s3_kinesis_and_a_parquet_manifest_on_s3(
    moto: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    uid = uuid.uuid4().hex[:8]
    endpoint = moto.endpoint  # type: ignore[attr-defined]
    cfg = parse_config(AWS.format(uid=uid, endpoint=endpoint, rejects=tmp_path / "rejects"))
    summary = await Engine(cfg).run()
    assert (
        summary["sinks"]["kin"]["failed"]["retail.pos_transaction"]
        == (summary["failed_intentionally"])
    )
    report = await verify(cfg, quiet=1.0)
    assert report["manifest_final"] and report["released"] == {"retail.pos_transaction": 6000}
    for sink in ("lake", "kin"):
        t = report["sinks"][sink]["retail.pos_transaction"]
        assert t["missing"] == 0 and t["duplicated_beyond"] == 0, (sink, t, report["chaos"])
        assert t["unidentified"] == 0 and t["dropped_intentionally"] > 20
    assert report["sinks"]["kin"]["retail.pos_transaction"]["rejected_oversize_intentionally"] > 0
    assert report["sinks"]["lake"]["retail.pos_transaction"]["rejected_oversize_intentionally"] == 0
    assert report["failures"] == []
