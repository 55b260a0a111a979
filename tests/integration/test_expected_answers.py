"""A platform's numbers against ``datafactory expect``'s answers, on a reference platform built
from real tools: a dbt project on DuckDB (dbt-duckdb; ``config/examples/platform-dbt`` over the
run of ``expect-demo.yaml``: the README's walk-through) that stages a chaos run's JSON lines
(invalid records rejected, each event once by its id) and models revenue per store per hour and
IoT alerts per site per day. ``expect --emit dbt`` writes the package its ``dbt test`` runs, ``--emit soda`` the SodaCL checks ``soda scan`` runs on its staged
tables. The correct platform passes all three checks (``verify --expected``, ``dbt test``,
``soda scan``); without the dedupe step, or without rejecting invalid records, they fail, and
``verify`` names exactly the windows chaos touched, with those events."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
DBT, SODA = ROOT / "build/dbt/bin/dbt", ROOT / "build/soda/bin/soda"
EXAMPLE = ROOT / "config/examples/expect-demo.yaml"  # the README's walk-through, as it is
QUESTIONS = {"sales_by_store_hour": "retail.pos_transaction", "alerts_by_site_day": "iot.alert"}
RUN_END = "2026-03-02T11:00:00"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "datafactory", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp")
    (out / "s.yaml").write_text(EXAMPLE.read_text().replace("./data/expect-demo", str(out)))
    r = cli("run", str(out / "s.yaml"))
    assert r.returncode == 0, r.stderr[-2000:]
    asked = [a for q in QUESTIONS for a in ("--question", q)]
    r = cli("expect", str(out / "s.yaml"), "--out", str(out / "expected"), *asked,
            "--emit", "dbt", "--emit", "soda")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert orjson.loads(r.stdout)["chaos"] is True
    return out


class Platform:
    """The dbt project, copied beside the run, with the emitted package installed."""

    def __init__(self, out: Path) -> None:
        self.out, self.project = out, out / "platform"
        shutil.copytree(ROOT / "config/examples/platform-dbt", self.project)
        (out / ".soda").mkdir()  # Soda Core's settings, from HOME (no usage statistics)
        (out / ".soda/config.yml").write_text("send_anonymous_usage_stats: false\n")
        self.dbt("deps", db=out / "deps.duckdb")

    def dbt(self, *args: str, db: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PLATFORM_DB": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
               "DATAFACTORY_EXPECTED": str(self.out / "expected/dbt")}  # fmt: skip
        r = subprocess.run([str(DBT), *args, "--profiles-dir", ".", "--no-use-colors"],
                           cwd=self.project, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
        assert "Encountered an error" not in r.stdout, r.stdout[-3000:]
        return r

    def build(self, name: str, **variables: bool) -> Build:
        """Seeds and models into a database of its own, then the package's tests (``dbt
        test``: ``dbt build`` would skip a model below a failing test), then ``soda scan`` of
        the staged tables."""
        db = self.out / f"{name}.duckdb"
        vars_ = ["--vars", orjson.dumps({"events": str(self.out / "events"), **variables}).decode()]
        made = self.dbt("build", "--resource-type", "seed", "--resource-type", "model", *vars_,
                        db=db)  # fmt: skip
        assert made.returncode == 0, made.stdout[-3000:]
        r = self.dbt("test", *vars_, db=db)
        failed = {line.split(" FAIL ")[1].split()[1] for line in r.stdout.splitlines()
                  if " FAIL " in line}  # fmt: skip
        (self.out / f"{name}.yml").write_text(
            f"data_source platform:\n  type: duckdb\n  path: {db}\n  read_only: true\n"
        )
        soda = subprocess.run(
            [str(SODA), "scan", "-d", "platform", "-c", f"{name}.yml", "-v", f"RUN_END={RUN_END}",
             "expected/soda/pos_transaction.yml", "expected/soda/alert.yml"],
            cwd=self.out, env={**os.environ, "HOME": str(self.out)}, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        return Build(f"duckdb://{db}", r.returncode, failed, soda.returncode, soda.stdout)


class Build:
    def __init__(self, db: str, dbt_rc: int, failed: set[str], soda_rc: int, soda: str) -> None:
        self.db, self.dbt_rc, self.failed, self.soda_rc = db, dbt_rc, failed, soda_rc
        self.soda_failed = {ln.split("]", 1)[1].strip().removesuffix(" [FAILED]")
                            for ln in soda.splitlines() if ln.rstrip().endswith("[FAILED]")}  # fmt: skip
        self.soda = soda


@pytest.fixture(scope="module")
def builds(run: Path) -> dict[str, Build]:
    p = Platform(run)
    return {
        "good": p.build("good"),
        "nodedupe": p.build("nodedupe", dedupe=False),
        "noreject": p.build("noreject", reject=False),
    }


def verify(
    out: Path, actual: str, question: str = "sales_by_store_hour", *more: str
) -> tuple[int, dict[str, Any]]:
    """``verify --expected`` of one question: (exit code, its report)."""
    r = cli("verify", str(out / "s.yaml"), "--expected", str(out / "expected"), "--actual",
            actual, "--question", question, "--json", *more)  # fmt: skip
    assert r.returncode in (0, 1), r.stderr[-2000:]
    return r.returncode, orjson.loads(r.stdout)["questions"][question]


def manifest(out: Path, stream: str) -> dict[str, set[str]]:
    """A stream's event ids by chaos step, as the manifest says (independently of expect)."""
    ids: dict[str, set[str]] = defaultdict(set)
    for path in (out / "manifest").rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            r = orjson.loads(line)
            if r.get("type") == "fault" and r["stream"] == stream:
                ids[r["step"]].add(r["event_id"])
    return ids


def events(out: Path, stream: str) -> list[dict[str, Any]]:
    folder = out / "events" / stream.replace(".", "/")
    return [orjson.loads(x) for p in sorted(folder.rglob("*.jsonl"))
            for x in p.read_bytes().splitlines()]  # fmt: skip


def test_the_correct_platform_passes_verify_dbt_and_soda(
    run: Path, builds: dict[str, Build]
) -> None:
    good = builds["good"]
    for question in QUESTIONS:
        code, report = verify(run, good.db, question)
        assert code == 0 and report["wrong"] == 0 and report["windows"] > 0, report
    assert good.dbt_rc == 0 and not good.failed, good.failed
    assert good.soda_rc == 0 and "All is good" in good.soda, good.soda[-2000:]


def test_without_dedupe_the_windows_duplicates_touched_fail_and_name_them(
    run: Path, builds: dict[str, Build]
) -> None:
    bad = builds["nodedupe"]
    for question, stream in QUESTIONS.items():
        code, report = verify(run, bad.db, question)
        truth = manifest(run, stream)
        if stream == "iot.alert":  # the question counts raised alerts (a cleared one's copies
            raised = {r["event_id"] for r in events(run, stream)  # change no number)
                      if r["alert_type"] == "alert_raised"}  # fmt: skip
            truth = {step: ids & raised for step, ids in truth.items()}
        assert code == 1 and report["wrong"] > 0
        named: set[str] = set()
        for w in report["windows_wrong"]:
            assert w["explained_by"] == ["duplicated"] and w["sums_match"], w
            named |= set(w["events"]["duplicated"])
        # every duplicate of a valid, delivered event is named, and nothing else is
        gone = truth.get("drop", set()) | truth.get("corrupt_value", set())
        assert named == truth["duplicate"] - gone
    # dbt: both questions' windows, both staged tables' counts and event ids
    assert bad.dbt_rc != 0
    assert bad.failed == {"expected_sales_by_store_hour", "expected_alerts_by_site_day",
                          "events_pos_transaction_count", "events_pos_transaction_unique",
                          "events_alert_count", "events_alert_unique"}  # fmt: skip
    assert bad.soda_rc == 2 and {"row_count = 21382", "duplicate_count(event_id) = 0"} <= (
        bad.soda_failed
    ), bad.soda[-2000:]


def test_without_rejection_the_windows_invalid_records_reached_fail(
    run: Path, builds: dict[str, Build]
) -> None:
    bad = builds["noreject"]
    code, report = verify(run, bad.db)
    truth = manifest(run, "retail.pos_transaction")
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
    # the IoT side rejects nothing here: its checks pass
    assert verify(run, bad.db, "alerts_by_site_day")[0] == 0
    assert bad.failed == {"expected_sales_by_store_hour", "events_pos_transaction_count"}


def test_a_platforms_tables_in_postgresql_are_read_alike(
    run: Path, builds: dict[str, Build]
) -> None:
    """The correct model's table copied into PostgreSQL (as a warehouse would hold it)."""
    import asyncio

    import asyncpg

    with duckdb.connect(builds["good"].db.removeprefix("duckdb://"), read_only=True) as con:
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
