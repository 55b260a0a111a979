"""A platform's numbers against ``datafactory expect``'s answers, on a small reference platform
built from real parts: a chaos run's JSON files validated against the schema (the tests'
reference platform's validator), deduplicated by event id and aggregated in DuckDB SQL into
revenue per store per hour. The correct model passes ``verify --expected``; without the
dedupe step, or without rejecting invalid records, it fails and names exactly the windows
chaos touched, with those events."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from datafactory.schema import load_schema
from tests.reference_platform import validate

SCENARIO = """
run: {name: exp, seed: 17, clock: simulated, start: "2026-03-02T08:00:00Z", duration: 3h}
packs:
  retail:
    params: {stores: 4, skus: 300, customers: 2000}
    streams:
      pos_transaction: {rate: {profile: constant, base: 2}}
sinks: {out: {type: file, path: OUT/data, format: json}}
chaos:
  - {step: drop, rate: 0.004}
  - {step: duplicate, rate: 0.006}
  - {step: corrupt_value, rate: 0.006, fields: [subtotal, tax, total]}
manifest:
  sink: {type: file, path: OUT/truth}
telemetry: {enabled: false}
"""
START, END = 1_772_438_400, 1_772_438_400 + 3 * 3600  # 2026-03-02 08:00-11:00 UTC
MODEL = """
CREATE TABLE sales_by_store_hour AS
SELECT time_bucket(INTERVAL 1 HOUR, TRY_CAST(event_time AS TIMESTAMPTZ)) AS window_start,
       time_bucket(INTERVAL 1 HOUR, TRY_CAST(event_time AS TIMESTAMPTZ)) + INTERVAL 1 HOUR
         AS window_end,
       store_id,
       count(*) AS transactions,
       sum(list_sum(list_transform(items, lambda x: TRY_CAST(x.quantity AS BIGINT)))) AS units,
       sum(TRY_CAST(subtotal AS DECIMAL(18, 2))) AS subtotal,
       sum(TRY_CAST(tax AS DECIMAL(18, 2))) AS tax,
       sum(TRY_CAST(total AS DECIMAL(18, 2))) AS revenue
FROM {source}
GROUP BY ALL
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "datafactory", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp")
    (out / "s.yaml").write_text(SCENARIO.replace("OUT", str(out)))
    r = cli("run", str(out / "s.yaml"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("expect", str(out / "s.yaml"), "--out", str(out / "expected"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert orjson.loads(r.stdout)["chaos"] is True
    return out


def platform(out: Path, name: str, *, dedupe: bool, reject: bool) -> str:
    """The platform's tables in a DuckDB database: raw lines -> valid (unless not
    ``reject``) -> one per event id (unless not ``dedupe``) -> the model."""
    schema = load_schema("retail.pos_transaction")
    staged = out / f"{name}.jsonl"
    with staged.open("wb") as f:
        for path in sorted((out / "data").rglob("*.jsonl")):
            for line in path.read_bytes().splitlines():
                if not reject or validate(line, schema, (START, END)) is None:
                    f.write(line + b"\n")
    source = f"read_json('{staged}', format = 'newline_delimited')"
    if dedupe:
        source = f"(SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY event_id) = 1)"
    db = out / f"{name}.duckdb"
    db.unlink(missing_ok=True)
    with duckdb.connect(str(db)) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(MODEL.format(source=source))
    return f"duckdb://{db}"


def verify(
    out: Path, actual: str, question: str = "sales_by_store_hour", *more: str
) -> tuple[int, dict[str, Any]]:
    """``verify --expected`` of one question: (exit code, its report)."""
    r = cli("verify", str(out / "s.yaml"), "--expected", str(out / "expected"), "--actual",
            actual, "--question", question, "--json", *more)  # fmt: skip
    assert r.returncode in (0, 1), r.stderr[-2000:]
    return r.returncode, orjson.loads(r.stdout)["questions"][question]


def manifest(out: Path) -> dict[str, set[str]]:
    """Event ids by fate, as the manifest says (independently of expect)."""
    from datafactory.engine.identity import event_ids

    seqs: dict[str, set[int]] = defaultdict(set)
    for path in (out / "truth").rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            r = orjson.loads(line)
            if r.get("type") == "fault":
                seqs[r["step"]].add(int(r["seq"]))
    out_ids = {}
    for step, s in seqs.items():
        ids = event_ids(17, "retail.pos_transaction", __import__("numpy").array(sorted(s)))
        out_ids[step] = {b.decode() for b in ids.tolist()}
    return out_ids


def test_the_correct_model_matches_the_expected_answers(run: Path) -> None:
    code, report = verify(run, platform(run, "good", dedupe=True, reject=True))
    assert code == 0 and report["wrong"] == 0 and report["windows"] == 12, report


def test_without_dedupe_the_windows_duplicates_touched_fail_and_name_them(run: Path) -> None:
    code, report = verify(run, platform(run, "nodedupe", dedupe=False, reject=True))
    truth = manifest(run)
    assert code == 1 and report["wrong"] > 0
    named: set[str] = set()
    for w in report["windows_wrong"]:
        assert w["explained_by"] == ["duplicated"] and w["sums_match"], w
        named |= set(w["events"]["duplicated"])
    # every duplicate of a valid, delivered event is named, and nothing else is
    delivered = truth["duplicate"] - truth.get("drop", set()) - truth.get("corrupt_value", set())
    assert named == delivered


def test_without_rejection_the_windows_invalid_records_reached_fail(run: Path) -> None:
    code, report = verify(run, platform(run, "noreject", dedupe=True, reject=False))
    truth = manifest(run)
    assert code == 1 and report["wrong"] > 0
    named: set[str] = set()
    for w in report["windows_wrong"]:
        if w["expected"] is None:  # a key the corruption made (store_id null): its window's
            assert set(w["candidates"]) <= truth["corrupt_value"], w  # rejected events
            assert w["candidates"], w
            continue
        assert "rejected" in w["explained_by"], w
        named |= set(w["events"]["rejected"])
    assert named and named <= truth["corrupt_value"]


def test_a_platforms_tables_in_postgresql_are_read_alike(run: Path) -> None:
    """The correct model's table copied into PostgreSQL (as a warehouse would hold it)."""
    import asyncio

    import asyncpg

    good = platform(run, "pg", dedupe=True, reject=True).removeprefix("duckdb://")
    with duckdb.connect(good) as con:
        rows = con.sql("SELECT * FROM sales_by_store_hour").fetchall()

    async def load() -> None:
        con = await asyncpg.connect(PG)
        try:
            await con.execute('DROP TABLE IF EXISTS "sales_by_store_hour"')
            await con.execute(
                'CREATE TABLE "sales_by_store_hour" (window_start timestamptz, window_end '
                "timestamptz, store_id text, transactions bigint, units numeric, subtotal "
                "numeric(18, 2), tax numeric(18, 2), revenue numeric(18, 2))"
            )
            await con.copy_records_to_table("sales_by_store_hour", records=rows)
        finally:
            await con.close()

    asyncio.run(load())
    code, report = verify(run, PG)
    assert code == 0 and report["windows_reported"] == 12, report


PG = "postgresql://postgres@127.0.0.1:5432/test"


LATE = """
run: {name: late, seed: 23, clock: simulated, start: "2026-03-02T00:00:00Z", duration: 12h}
packs:
  iot:
    params: {sites: 3, devices: 30, site_outage_rate: 2000, site_outage_minutes: 15,
             flush_probability: 1.0}
    streams: {telemetry: {}}
sinks: {out: {type: file, path: OUT/data, format: json}}
telemetry: {enabled: false}
"""


def streaming_job(out: Path, lag: float, allowed: float | None) -> Path:
    """A windowed job over the delivered readings in the order they arrived (``sent_at``: a
    reading a device buffered through an outage arrives when it reconnects), its watermark
    ``lag`` behind the arrival: a reading for a 5-minute window the watermark passed more than
    ``allowed`` ago is dropped (None: nothing is)."""
    import datetime as dt

    def epoch(text: str) -> float:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    rows = [orjson.loads(x) for p in sorted((out / "data").rglob("*.jsonl"))
            for x in p.read_bytes().splitlines()]  # fmt: skip
    rows.sort(key=lambda r: epoch(r["sent_at"]))
    groups: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for r in rows:
        start = int(epoch(r["event_time"])) // 300 * 300
        if allowed is not None and epoch(r["sent_at"]) - lag >= start + 300 + allowed:
            continue  # too late for its window
        groups[(start, r["device_id"], r["metric"])].append(r["value"])
    folder = out / f"job-{allowed}"
    folder.mkdir(exist_ok=True)
    with (folder / "readings_by_device_5min.jsonl").open("wb") as f:
        for (start, device, metric), values in sorted(groups.items()):
            f.write(orjson.dumps({
                "window_start": dt.datetime.fromtimestamp(start, dt.UTC).isoformat(),
                "device_id": device, "metric": metric, "readings": len(values),
                "mean": sum(values) / len(values), "min": min(values), "max": max(values),
            }) + b"\n")  # fmt: skip
    return folder


def test_under_a_lateness_policy_the_late_events_are_left_out_and_named(
    tmp_path: Path,
) -> None:
    (tmp_path / "s.yaml").write_text(LATE.replace("OUT", str(tmp_path)))
    assert cli("run", str(tmp_path / "s.yaml")).returncode == 0
    r = cli("expect", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "expected"),
            "--format", "json", "--watermark-lag", "10", "--allowed-lateness", "60",
            "--question", "readings_by_device_5min")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    faults = [orjson.loads(x) for x in (tmp_path / "expected" /
              "readings_by_device_5min.faults.jsonl").read_bytes().splitlines()]  # fmt: skip
    late = {f["event_id"] for f in faults if f["fault"] == "late"}
    assert len(late) > 50  # readings buffered through 15-minute outages

    def check(folder: Path) -> tuple[int, dict[str, Any]]:
        return verify(tmp_path, str(folder), "readings_by_device_5min", "--tolerance", "1e-9")

    # the job with the same policy gives the expected answers
    code, report = check(streaming_job(tmp_path, 10, 60))
    assert code == 0, report["windows_wrong"][:3]
    # a job that drops nothing counts the late readings: their windows fail, they are named
    code, report = check(streaming_job(tmp_path, 10, None))
    assert code == 1
    named: set[str] = set()
    for w in report["windows_wrong"]:
        if w["expected"] is None:  # a window only late readings fell in
            named |= set(w["events"].get("late", []))
            continue
        assert w["explained_by"] == ["late"], w
        named |= set(w["events"]["late"])
    assert named == late
