"""Batch mode end to end: a year of retail history as Hive-partitioned Parquet in a local folder
and in S3 (moto), read back by DuckDB and pyarrow.dataset; identical files whatever the
worker count or engine (process pool, Dask LocalCluster); a killed backfill resumed against S3
without duplicate or missing rows and without open multipart uploads."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from datafactory.batch.runner import prepare, run_batch
from datafactory.lifecycle.local import Moto

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "datafactory"]

RETAIL = """
run: {{name: hist, seed: 11}}
packs:
  retail:
    params: {{stores: 6, customers: 3000, skus: 400, expected_daily_transactions: {daily}}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}}}
      inventory_movement: {{}}
      return: {{}}
      price_change: {{}}
      customer_event: {{}}
sinks: {{none: {{type: stdout}}}}
{extra}
"""


def write_config(tmp: Path, rate: float = 0.004, extra: str = "") -> Path:
    path = tmp / "retail.yaml"
    path.write_text(RETAIL.format(rate=rate, daily=round(rate * 86_400), extra=extra))
    return path


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")


def batch(cfg: Path, tmp: Path, start: str, end: str, **spec: Any) -> dict[str, Any]:
    engine = spec.pop("engine", "local")
    scheduler = spec.pop("scheduler", None)
    job, config = prepare(str(cfg), start, end, spec, ledger_url=f"sqlite:///{tmp}/ledger.db")
    return run_batch(job, config, engine=engine, scheduler=scheduler)


def local_files(root: Path) -> dict[str, str]:
    """Data files (not the manifests, not the pickled states) by relative path -> sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith(("_manifests", "_state"))
    }


def jsonl(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The records of JSON-lines files, file by file in name order."""
    return [json.loads(line) for p in sorted(paths) for line in p.read_text().splitlines()]


def manifest(root: Path, summary: dict[str, Any]) -> dict[str, Any]:
    return json.loads((root / summary["manifest"]).read_text())  # type: ignore[no-any-return]


def test_a_year_of_retail_lands_as_typed_partitioned_parquet(tmp_path: Path) -> None:
    import duckdb

    cfg = write_config(tmp_path)
    out = tmp_path / "lake"
    summary = batch(cfg, tmp_path, "2024-01-01", "2024-12-31", out=str(out), shards=2, workers=2)
    assert summary["partitions"] == 2 * 366
    m = manifest(out, summary)
    assert m["partitions"]["finished"] == 2 * 366
    pos_rows = m["totals"]["streams"]["retail.pos_transaction"]["rows"]
    # the constant rate earns 0.004/s over 366 days, each shard its share of the stores
    assert abs(pos_rows - 0.004 * 86_400 * 366) <= 4
    for f in m["files"]:  # checksums and sizes in the manifest are the files'
        data = (out / f["key"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    assert set(m["schemas"]) == {
        "retail.pos_transaction", "retail.inventory_movement", "retail.return",
        "retail.price_change", "retail.customer_event",
    }  # fmt: skip

    con = duckdb.connect()
    glob = f"{out}/stream=retail.pos_transaction/*/*.parquet"
    rel = con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    types = dict(zip(rel.columns, [str(t) for t in rel.types], strict=True))
    assert types["event_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["total"] == "DECIMAL(12,2)"
    assert types["register_id"] == "INTEGER" and types["transaction_id"] == "BIGINT"
    assert types["items"].startswith("STRUCT(line INTEGER, sku VARCHAR")
    assert "unit_price DECIMAL(12,2)" in types["items"]
    n, ids, tx, days, bad_dt, bad_total = con.execute(f"""
        SELECT count(*), count(DISTINCT event_id), count(DISTINCT transaction_id),
               count(DISTINCT dt),
               count(*) FILTER (WHERE CAST(dt AS VARCHAR) <>
                                strftime(event_time AT TIME ZONE 'UTC', '%Y-%m-%d')),
               count(*) FILTER (WHERE subtotal + tax <> total)
        FROM read_parquet('{glob}', hive_partitioning = true)""").fetchone()  # type: ignore[misc]
    assert n == pos_rows == ids == tx  # unique across both shards
    assert days == 366 and bad_dt == 0 and bad_total == 0
    anonymous = con.execute(
        f"SELECT count(*) FILTER (WHERE customer_id IS NULL) FROM read_parquet('{glob}')"
    ).fetchone()[0]  # type: ignore[index]
    assert 0 < anonymous < n  # guests and cardless sales stay null
    # the shards' stores are disjoint parts of the chain's six
    stores = con.execute(f"SELECT DISTINCT store_id FROM read_parquet('{glob}')").fetchall()
    assert {s for (s,) in stores} <= {f"S{i:04d}" for i in range(1, 7)}
    # returns refer to transactions of the same history
    ret = f"{out}/stream=retail.return/*/*.parquet"
    orphans = con.execute(f"""
        SELECT count(*) FROM read_parquet('{ret}') r
        ANTI JOIN read_parquet('{glob}') p USING (transaction_id)""").fetchone()
    assert orphans == (0,)

    dataset = ds.dataset(out / "stream=retail.inventory_movement", format="parquet",
                         partitioning="hive")  # fmt: skip
    table = dataset.to_table()
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert table.num_rows == m["totals"]["streams"]["retail.inventory_movement"]["rows"]


def test_same_seed_same_files_with_1_2_4_workers_and_on_dask(tmp_path: Path) -> None:
    from distributed import LocalCluster

    cfg = write_config(tmp_path, rate=0.02)
    trees = {}
    for workers in (1, 2, 4):
        out = tmp_path / f"w{workers}"
        batch(cfg, tmp_path, "2024-02-25", "2024-03-05", out=str(out), shards=4,
              workers=workers)  # fmt: skip
        trees[workers] = local_files(out)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:  # fmt: skip
        out = tmp_path / "dask"
        batch(cfg, tmp_path, "2024-02-25", "2024-03-05", out=str(out), shards=4,
              engine="dask", scheduler=cluster.scheduler_address)  # fmt: skip
        trees["dask"] = local_files(out)
    assert len(trees[1]) > 40
    assert trees[1] == trees[2] == trees[4] == trees["dask"]
    # and a different seed gives different data
    job, config = prepare(str(cfg), "2024-02-25", "2024-03-05",
                          {"out": str(tmp_path / "other"), "shards": 4}, seed=12,
                          ledger_url=f"sqlite:///{tmp_path}/ledger.db")  # fmt: skip
    run_batch(job, config)
    other = local_files(tmp_path / "other")
    assert set(other.values()).isdisjoint(v for k, v in trees[1].items() if "pos_transaction" in k)


def test_a_quarter_in_s3_matches_the_local_one_and_reruns_write_nothing(
    tmp_path: Path, moto: Moto, aws_env: None
) -> None:
    # (a quarter: the year is the local test's; here S3 and the ledger's rerun are the point)
    cfg = write_config(tmp_path, extra=f"batch: {{endpoint_url: '{moto.endpoint}'}}")
    local = batch(cfg, tmp_path, "2024-01-01", "2024-03-31", out=str(tmp_path / "lake"),
                  shards=2, workers=2)  # fmt: skip
    s3 = batch(cfg, tmp_path, "2024-01-01", "2024-03-31", out="s3://history/retail",
               shards=2, workers=2)  # fmt: skip
    assert s3["files"] == local["files"] and s3["rows"] == local["rows"]
    fs = pa.fs.S3FileSystem(endpoint_override=moto.endpoint, scheme="http",
                            access_key="x", secret_key="x", region="us-east-1")  # fmt: skip
    with fs.open_input_stream(f"history/retail/{s3['manifest']}") as f:
        remote = json.loads(f.read())
    mine = manifest(tmp_path / "lake", local)
    assert [(x["key"], x["sha256"]) for x in remote["files"]] == [
        (x["key"], x["sha256"]) for x in mine["files"]
    ]
    dataset = ds.dataset("history/retail/stream=retail.pos_transaction", filesystem=fs,
                         format="parquet", partitioning="hive")  # fmt: skip
    table = dataset.to_table(columns=["event_time", "total", "dt"])
    assert table.num_rows == mine["totals"]["streams"]["retail.pos_transaction"]["rows"]
    assert table.schema.field("total").type == pa.decimal128(12, 2)
    # a rerun of the same batch: every partition is in the ledger, nothing is written again
    again = batch(cfg, tmp_path, "2024-01-01", "2024-03-31", out="s3://history/retail",
                  shards=2, workers=2)  # fmt: skip
    # (from the state saved after the last day, day 90 of 91: nothing is simulated again)
    assert again["written_now"]["files"] == 0 and again["restored_from_day"] == [90, 90]
    assert again["rows"] == s3["rows"]


def _ledger_done(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return int(c.execute("SELECT count(*) FROM batch_partitions").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


def test_killed_backfill_resumes_without_duplicates_gaps_or_open_uploads(
    tmp_path: Path, moto: Moto, aws_env: None
) -> None:
    import boto3

    # JSON lines of ~12 MiB per shard and day: every POS file goes up in 5 MiB parts
    cfg = write_config(
        tmp_path, rate=0.3, extra=f"batch: {{endpoint_url: '{moto.endpoint}', "
        "part_size: 5242880, format: jsonl}",
    )  # fmt: skip
    args = [*CLI, "batch", str(cfg), "--start", "2024-03-01", "--end", "2024-03-12",
            "--shards", "2", "--workers", "2", "--no-progress",
            "--ledger", f"sqlite:///{tmp_path}/run.db"]  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    log = tmp_path / "killed.log"
    with open(log, "wb") as err:
        killed = subprocess.Popen([*args, "--out", "s3://resume/raw"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=err,
                                  start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while _ledger_done(tmp_path / "run.db") < 3 and time.monotonic() < deadline:
        assert killed.poll() is None, log.read_text()
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # the CLI and its worker processes, mid-write
    killed.wait()
    at_kill = _ledger_done(tmp_path / "run.db")
    assert 3 <= at_kill < 24, "the kill has to land mid-way for this test to mean anything"

    resumed = subprocess.run([*args, "--out", "s3://resume/raw"], env=env,
                             capture_output=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()
    summary = json.loads(resumed.stdout)
    assert summary["replayed_partitions"] >= at_kill
    clean = subprocess.run([*args, "--out", "s3://resume/clean"], env=env,
                           capture_output=True, timeout=300)  # fmt: skip
    assert clean.returncode == 0, clean.stderr.decode()

    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")
    assert s3.list_multipart_uploads(Bucket="resume").get("Uploads", []) == []

    def objects(prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="resume", Prefix=prefix):
            for o in page.get("Contents", []):
                key = o["Key"][len(prefix) :]
                if not key.startswith(("_manifests", "_state")):
                    out[key] = o["ETag"]
        return out

    resumed_objs, clean_objs = objects("raw/"), objects("clean/")
    assert resumed_objs.keys() == clean_objs.keys()
    multipart = [k for k, etag in resumed_objs.items() if re.search(r"-[2-9]$", etag.strip('"'))]
    assert multipart, "the POS files should have gone up in parts"

    # every row exactly once: event ids of the resumed POS history against the clean one
    def ids(prefix: str) -> list[str]:
        out: list[str] = []
        for key in sorted(k for k in resumed_objs if "pos_transaction" in k):
            body = s3.get_object(Bucket="resume", Key=prefix + key)["Body"].read()
            out += [json.loads(line)["event_id"] for line in body.splitlines()]
        return out

    got, want = ids("raw/"), ids("clean/")
    assert len(got) == len(set(got)) and sorted(got) == sorted(want)
    assert len(want) == round(0.3 * 86_400 * 12)


def test_bad_requests_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    iot = tmp_path / "iot.yaml"
    iot.write_text("packs: {iot: {params: {sites: 3}}}\nsinks: {none: {type: stdout}}\n")
    cases = [
        ([str(cfg), "--start", "2024-02-01", "--end", "2024-01-01"], "must be after --start"),
        ([str(cfg), "--start", "yesterday", "--end", "2024-01-01"], "--start/--end"),
        ([str(iot), "--start", "2024-01-01", "--end", "2024-01-02", "--shards", "4"],
         "pack 'iot' cannot be split into 4 shards (at most 3"),
        ([str(cfg), "--start", "2024-01-01", "--end", "2024-01-02", "--out", "s3://A_B/x"],
         "not a valid S3 bucket name"),
        ([str(cfg), "--start", "2024-01-01", "--end", "2024-01-02", "--format", "avro",
          "--compression", "zstd"], "avro files are written uncompressed"),
    ]  # fmt: skip
    for argv, message in cases:
        out = tmp_path / "never"
        r = subprocess.run([*CLI, "batch", *argv, "--out" if "--out" not in argv else "--seed",
                            str(out) if "--out" not in argv else "1",
                            "--ledger", f"sqlite:///{tmp_path}/l.db"],
                           capture_output=True, timeout=60)  # fmt: skip
        assert r.returncode == 2, (argv, r.stderr)
        assert message in r.stderr.decode(), (argv, r.stderr.decode())
        assert not out.exists()


def test_healthcare_claims_batch_to_json_lines_and_parquet(tmp_path: Path) -> None:
    import duckdb

    cfg = tmp_path / "hc.yaml"
    cfg.write_text("""
run: {seed: 3}
packs:
  healthcare:
    params: {patients: 400, errors: {invalid_icd10: 0.05}}
sinks: {none: {type: stdout}}
""")
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / fmt
        summary = batch(cfg, tmp_path, "2025-03-01", "2025-03-20", out=str(out), shards=2,
                        workers=2, format=fmt, compression="gzip")  # fmt: skip
        m = manifest(out, summary)
        assert m["totals"]["streams"]["healthcare.claim"]["rows"] > 50
        # the labelled errors go along as ground truth files
        assert m["totals"]["streams"]["_ground_truth"]["rows"] > 0
    claims = [
        json.loads(line)
        for p in sorted((tmp_path / "jsonl").glob("stream=healthcare.claim/*/*.jsonl.gz"))
        for line in __import__("gzip").decompress(p.read_bytes()).splitlines()
    ]
    assert all(c["resourceType"] in ("Claim", "Bundle") for c in claims)
    # both shards' patients, numbered apart
    assert {int(c["id"].removeprefix("claim-")) // 10**12 for c in claims} == {0, 1}
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/parquet/stream=healthcare.claim"
                "/*/*.parquet')").fetchone()  # fmt: skip
    assert n == (len(claims),)
    start = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    assert all(p.name.startswith("dt=2025-03-") for p in
               (tmp_path / "parquet" / "stream=healthcare.claim").iterdir())  # fmt: skip
    assert start.year == 2025


def test_a_resumed_batch_starts_from_its_last_saved_state_and_writes_the_same(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, rate=0.02, extra="batch: {checkpoint_days: 4}")
    out = tmp_path / "lake"
    first = batch(cfg, tmp_path, "2024-01-01", "2024-01-20", out=str(out), shards=2)
    want = local_files(out)
    assert len(list(out.glob("_state/*/shard-0001/day-*.pkl"))) == 5  # days 4, 8, ... 20
    # the crash: days 11..20 never happened (no ledger rows, no files)
    with sqlite3.connect(tmp_path / "ledger.db") as c:
        c.execute("DELETE FROM batch_partitions WHERE chunk >= 10")
    for key in want:
        if any(f"dt=2024-01-{d}" in key for d in range(11, 21)):
            (out / key).unlink()
    again = batch(cfg, tmp_path, "2024-01-01", "2024-01-20", out=str(out), shards=2)
    # from the state after day 8 (index 7): days 9 and 10 simulated again, not written
    assert again["restored_from_day"] == [7, 7]
    assert again["replayed_partitions"] == 2 * 2
    assert local_files(out) == want
    assert again["rows"] == first["rows"]


def test_history_then_now_a_stream_run_continues_the_batch(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, rate=0.02)
    out = tmp_path / "lake"
    summary = batch(cfg, tmp_path, "2024-01-01", "2024-01-20", out=str(out), shards=1,
                    format="jsonl")  # fmt: skip
    (state,) = summary["final_states"]
    now = tmp_path / "now.yaml"
    now.write_text(
        cfg.read_text()
        .replace(
            "run: {name: hist, seed: 11}",
            "run: {name: now, seed: 11, clock: simulated, duration: 2d}",
        )
        .replace(
            "sinks: {none: {type: stdout}}",
            f"sinks: {{f: {{type: file, path: '{tmp_path}/now', format: json}}}}\n"
            "telemetry: {enabled: false}",
        )
    )
    r = subprocess.run([*CLI, "run", str(now), "--from-state", str(out / state)],
                       capture_output=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()

    hist_pos = jsonl(out.glob("stream=retail.pos_transaction/*/*"))
    now_pos = jsonl((tmp_path / "now").rglob("*pos_transaction*/*.jsonl"))
    assert len(now_pos) == round(0.02 * 86_400 * 2)
    # the same history goes on: ids continue, time starts where it ended
    assert min(p["transaction_id"] for p in now_pos) == max(
        p["transaction_id"] for p in hist_pos) + 1  # fmt: skip
    assert min(p["event_time"] for p in now_pos) >= "2024-01-21T00:00:00"
    assert not {p["event_id"] for p in now_pos} & {p["event_id"] for p in hist_pos}
    # the customers buying now are the history's (created then) or new ones (created now)
    created = {
        e["customer_id"]
        for e in [*jsonl(out.glob("stream=retail.customer_event/*/*")),
                  *jsonl((tmp_path / "now").rglob("*customer_event*/*.jsonl"))]
        if e["event_type"] == "created"
    }  # fmt: skip
    buyers = {p["customer_id"] for p in now_pos if p["customer_id"]}
    assert buyers and buyers <= created
    assert buyers & {p["customer_id"] for p in hist_pos}  # regulars keep coming back
    # every stream: history inside its window, the continuation after it, nothing twice
    for stream in ("inventory_movement", "price_change", "customer_event", "return"):
        then = jsonl(out.glob(f"stream=retail.{stream}/*/*"))
        later = jsonl((tmp_path / "now").rglob(f"*{stream}*/*.jsonl"))
        assert then and max(e["event_time"] for e in then) < "2024-01-21T00:00:00", stream
        assert all(e["event_time"] >= "2024-01-21T00:00:00" for e in later), stream
        assert not {e["event_id"] for e in then} & {e["event_id"] for e in later}, stream

    # a state only continues its own config: another seed is refused, and says why
    other = subprocess.run([*CLI, "run", str(now), "--seed", "12", "--from-state",
                            str(out / state)], capture_output=True, timeout=60)  # fmt: skip
    assert other.returncode == 2
    assert "other seed" in other.stderr.decode()


def test_progress_on_a_tty_and_in_metrics(tmp_path: Path) -> None:
    """A terminal gets a bar (partitions, rows/s, bytes, ETA); --metrics serves the same
    progress for Prometheus while the batch runs."""
    import pty
    import urllib.request

    from datafactory.lifecycle.local import free_port

    cfg = write_config(tmp_path, rate=0.05)
    port = free_port()
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "batch", str(cfg), "--start", "2024-01-01", "--end", "2024-04-30",
         "--out", str(tmp_path / "lake"), "--shards", "2", "--metrics", f"127.0.0.1:{port}",
         "--ledger", f"sqlite:///{tmp_path}/ledger.db"],
        stdin=secondary, stdout=subprocess.DEVNULL, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            time.sleep(0.1)
            continue
        for line in text.splitlines():
            if line.startswith("datafactory_batch_"):
                name, value = line.rsplit(" ", 1)
                seen[name] = float(value)
        if seen.get("datafactory_batch_partitions_done", 0) > 0:
            break
        time.sleep(0.1)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the batch ended and closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    proc.wait(timeout=120)
    os.close(primary)
    assert proc.returncode == 0
    assert seen["datafactory_batch_partitions_total"] == 2 * 121
    assert 0 < seen["datafactory_batch_partitions_done"] <= 2 * 121
    assert seen["datafactory_batch_rows_written"] > 0
    text = screen.decode(errors="replace")
    assert "242/242" in text and "rows/s" in text and "MiB" in text


def test_avro_and_zstd_json_lines_read_back(tmp_path: Path) -> None:
    import fastavro
    import pyarrow as pa

    cfg = write_config(tmp_path, rate=0.02)
    counts = {}
    for fmt, compression in (("avro", "none"), ("jsonl", "zstd")):
        out = tmp_path / fmt
        summary = batch(cfg, tmp_path, "2024-05-01", "2024-05-03", out=str(out), shards=2,
                        format=fmt, compression=compression)  # fmt: skip
        m = manifest(out, summary)
        want = m["totals"]["streams"]["retail.pos_transaction"]["rows"]
        rows: list[dict[str, Any]] = []
        for f in sorted(out.glob("stream=retail.pos_transaction/*/*")):
            if fmt == "avro":
                with open(f, "rb") as fh:
                    rows += list(fastavro.reader(fh))
            else:
                assert f.name.endswith(".jsonl.zst")
                with pa.input_stream(str(f), compression="zstd") as fh:
                    rows += [json.loads(line) for line in fh.read().splitlines()]
        assert len(rows) == want > 0
        assert len({r["event_id"] for r in rows}) == want
        counts[fmt] = sorted(r["transaction_id"] for r in rows)
    assert counts["avro"] == counts["jsonl"]  # the same history in both formats


class Pwn:
    """A pickle that runs code when loaded: it creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


async def test_the_daemon_continues_a_history_given_in_run_from_state(tmp_path: Path) -> None:
    import aiohttp

    from datafactory.control.daemon import Daemon

    cfg = write_config(tmp_path, rate=0.02)
    out = tmp_path / "lake"
    summary = await asyncio.to_thread(
        batch, cfg, tmp_path, "2024-01-01", "2024-01-10", out=str(out), shards=1, format="jsonl"
    )
    state = str(out / summary["final_states"][0])
    d = Daemon(listen="127.0.0.1:0", ledger=f"sqlite:///{tmp_path}/daemon.db", token="tok",
               configs=None, watch=False, states=[str(out)],
               data_root=str(tmp_path))  # fmt: skip
    await d.start()
    try:
        spec = {
            "run": {"name": "now", "seed": 11, "clock": "simulated", "duration": "1d",
                    "from_state": state},
            "packs": {"retail": {"params": {"stores": 6, "customers": 3000, "skus": 400,
                                            "expected_daily_transactions": 1728},
                                 "streams": {"pos_transaction": {
                                     "rate": {"profile": "constant", "base": 0.02}}}}},
            "sinks": {"out": {"type": "file", "path": str(tmp_path / "now")}},
        }  # fmt: skip
        headers = {"Authorization": "Bearer tok"}
        base = f"http://127.0.0.1:{d.port}/v1/runs"

        async def finished() -> dict[str, Any]:
            """The run of ``spec``, once it has COMPLETED or FAILED."""
            async with aiohttp.ClientSession(headers=headers) as s:
                async with s.post(base, json={"spec": spec}) as r:
                    assert r.status == 201, await r.text()
                    rid = (await r.json())["id"]
                for _ in range(200):
                    async with s.get(f"{base}/{rid}") as r:
                        view: dict[str, Any] = await r.json()
                    if view["state"] in ("COMPLETED", "FAILED"):
                        break
                    await asyncio.sleep(0.1)
            return view

        view = await finished()
        assert view["state"] == "COMPLETED", view
        # a state that is not there: the run fails and says which and why
        spec["run"]["from_state"] = str(out / "missing.pkl")  # type: ignore[index]
        bad = await finished()
        assert bad["state"] == "FAILED"
        assert "missing.pkl" in bad["error"] and "cannot read" in bad["error"]
        # a crafted pickle where states may be read: refused unread (its code never runs)
        marker = tmp_path / "pwned"
        evil = out / "evil.pkl"
        evil.write_bytes(pickle.dumps(Pwn(str(marker))))
        spec["run"]["from_state"] = str(evil)  # type: ignore[index]
        bad = await finished()
        assert bad["state"] == "FAILED" and "not a datafactory state" in bad["error"]
        assert not marker.exists()
        # anywhere else (a FIFO that would block whoever opens it): refused, never opened
        fifo = tmp_path / "elsewhere.fifo"
        os.mkfifo(fifo)
        for where in (str(fifo), "/etc/shadow", str(out / ".." / "elsewhere.fifo")):
            spec["run"]["from_state"] = where  # type: ignore[index]
            async with (
                aiohttp.ClientSession(headers=headers) as s,
                s.post(base, json={"spec": spec}) as r,
            ):
                assert r.status == 422, await r.text()
                text = await r.text()
            assert "run.from_state" in text and "outside the locations" in text
    finally:
        await d.shutdown()
    hist = jsonl(out.glob("stream=retail.pos_transaction/*/*"))
    now = jsonl((tmp_path / "now").rglob("*.jsonl"))
    assert len(now) == round(0.02 * 86_400)
    assert min(r["transaction_id"] for r in now) == max(r["transaction_id"] for r in hist) + 1
    assert min(r["event_time"] for r in now) >= "2024-01-11T00:00:00"


def test_iot_fleet_batch_in_shards_same_files_whatever_the_workers(tmp_path: Path) -> None:
    import duckdb

    cfg = tmp_path / "iot.yaml"
    cfg.write_text("""
run: {seed: 4}
packs:
  iot:
    params:
      devices: 60
      sites: 4
      incidents: [{kind: stuck_at, device: D000045, at: 7200, duration: 3600}]
sinks: {none: {type: stdout}}
""")
    trees = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        batch(cfg, tmp_path, "2025-06-01", "2025-06-02", out=str(out), shards=2,
              workers=workers)  # fmt: skip
        trees.append(local_files(out))
    assert trees[0] == trees[1] and len(trees[0]) > 8
    con = duckdb.connect()
    glob = f"{tmp_path}/w1/stream=iot.telemetry/*/*.parquet"
    by_file = con.execute(
        f"SELECT filename LIKE '%part-0000-%' AS first, min(device_id), max(device_id), "
        f"count(DISTINCT device_id) FROM read_parquet('{glob}', filename = true) GROUP BY 1 "
        "ORDER BY 1 DESC"
    ).fetchall()
    assert by_file == [(True, "D000001", "D000030", 30), (False, "D000031", "D000060", 30)]
    # the incident on D000045 is shard 1's ground truth
    truth = jsonl((tmp_path / "w1").glob("stream=_ground_truth/*/*"))
    stuck = [t for t in truth if t["kind"] == "stuck_at"]
    assert stuck and all(t["detail"]["device"] == "D000045" for t in stuck)
    assert all(t["step"] == "domain" and t["event_id"] for t in truth)  # the manifest's shape


def test_hourly_partitions_and_file_rows_cut_a_day_into_files_as_it_is_written(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, rate=0.5)
    spec = {"shards": 1, "format": "jsonl", "partition": "hour", "file_rows": 1_000}
    first = batch(cfg, tmp_path, "2024-03-01", "2024-03-02", out=str(tmp_path / "a"), **spec)
    files = sorted((tmp_path / "a").rglob("stream=retail.pos_transaction/*/*/*.jsonl"))
    seqs: list[int] = []
    hours: set[tuple[str, str]] = set()
    for p in files:
        rows = jsonl([p])
        assert 0 < len(rows) <= 1_000
        hour = p.parent.name  # hour=HH: every row of the file is in it
        hours.add((p.parent.parent.name, hour))
        assert {f"hour={r['event_time'][11:13]}" for r in rows} == {hour}, p
        assert int(p.name.split("-")[2].split(".")[0]) == len(seqs)  # named by first seq
        seqs += list(range(len(seqs), len(seqs) + len(rows)))
    assert len(hours) == 48 and len(seqs) == round(0.5 * 2 * 86_400)
    ids = [r["event_id"] for r in jsonl(files)]
    assert len(set(ids)) == len(ids) == len(seqs)
    # the same files, byte for byte, from a fresh run
    again = batch(cfg, tmp_path, "2024-03-01", "2024-03-02", out=str(tmp_path / "b"), **spec)
    assert local_files(tmp_path / "a") == local_files(tmp_path / "b")
    assert first["rows"] == again["rows"]
