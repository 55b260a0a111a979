"""``datafactory expect``: the answers it gives are the answers a plain, record-by-record
computation gives over the events a run really wrote (so its events are the run's, made
again, and its aggregation is right), for every question of the retail and IoT packs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from datafactory.config import load_config
from datafactory.expect import run as expect
from datafactory.expect.questions import Measure, Question, plan
from datafactory.runtime.engine import Engine

SCENARIO = """
run: {name: exp, seed: 13, clock: simulated, start: "2026-03-02T22:00:00Z", duration: 4h}
packs:
  retail:
    params: {stores: 4, skus: 300, customers: 2000}
    streams:
      pos_transaction: {rate: {profile: constant, base: 3}}
      return: {}
      customer_event: {}
      inventory_movement: {}
  iot:
    params: {sites: 3, devices: 40, site_outage_rate: 3000, site_outage_minutes: 10}
sinks: {out: {type: file, path: OUT, format: json}}
telemetry: {enabled: false}
"""


def _s(text: str) -> Decimal:
    """An RFC 3339 time as exact epoch seconds."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return Decimal(int(t.timestamp())) + Decimal(t.microsecond) / 1_000_000


def reference(
    q: Question, records: list[dict[str, Any]], end: int = 0
) -> dict[tuple[Any, ...], dict]:
    """The question answered record by record (the plain way a reader would); a running
    question's totals carried to the window ``end`` falls in (epoch seconds)."""
    items = next((b.split(".")[0] for b in q.by if "." in b), None)
    groups: dict[tuple[Any, ...], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if any(r[f] not in values for f, values in q.where):
            continue
        t = dt.datetime.fromisoformat(r["event_time"].replace("Z", "+00:00"))
        start = int(t.timestamp()) // q.window * q.window
        for row in ([{**r, **{f"{items}.{k}": v for k, v in i.items()}} for i in r[items]]
                    if items else [r]):  # fmt: skip
            key = (start, *(row[b] for b in q.by))
            g = groups[key]
            for m in q.measures:
                if m.op == "count":  # (of a field: its non-null values)
                    g[m.name].append(1 if m.field is None else row[m.field])
                elif m.since is not None:  # a span, in seconds
                    a, b = row[m.field], row[m.since]
                    g[m.name].append(None if a is None or b is None else _s(a) - _s(b))
                elif "." in m.field and not items:  # an item field per event: its sum
                    top, f = m.field.split(".")
                    g[m.name].append(sum((i[f] for i in r[top]), Decimal(0)))
                else:
                    g[m.name].append(row[m.field])
    out = {}
    for key, g in groups.items():
        row = {}
        for m in q.measures:
            vals = [v for v in g[m.name] if v is not None]
            row[m.name] = {"count": lambda v: len(v), "sum": sum, "min": min, "max": max,
                           "mean": lambda v: sum(v) / len(v)}[m.op](vals) if vals or (
                               m.op == "count") else None  # (SQL: null over no values)  # fmt: skip
        out[key] = row
    if q.running:  # every window from a group's first to the last, its totals so far
        running: dict[tuple[Any, ...], dict] = {}
        for group in {k[1:] for k in out}:
            total = {m.name: 0 for m in q.measures}
            first = min(k[0] for k in out if k[1:] == group)
            for w in range(first, (end - 1) // q.window * q.window + 1, q.window):
                for m in q.measures:
                    total[m.name] += out.get((w, *group), {}).get(m.name, 0)
                running[(w, *group)] = dict(total)
        return running
    return out


@pytest.fixture(scope="module")
def run_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, list[dict]]]:
    out = tmp_path_factory.mktemp("run")
    path = out / "scenario.yaml"
    path.write_text(SCENARIO.replace("OUT", str(out / "data")))
    cfg = load_config(path)
    asyncio.run(Engine(cfg).run())
    events: dict[str, list[dict]] = defaultdict(list)
    for f in sorted((out / "data").rglob("*.jsonl")):
        stream = f"{f.parent.parent.name}.{f.parent.name}"
        for line in f.read_bytes().splitlines():
            events[stream].append(json.loads(line, parse_float=Decimal))
    return cfg, events


@pytest.mark.parametrize(
    ("group_at", "fold_at", "copy_keys"),
    [(65_536, 64, 2), (20, 3, 0), (20, 100_000, 2)],
    ids=["big", "folded", "apart"],
)
def test_every_answer_is_the_record_by_record_answer_over_the_runs_events(
    run_output: tuple[Any, dict[str, list[dict]]],
    group_at: int,
    fold_at: int,
    copy_keys: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(Grouped twenty rows at a time, the partials folded every three, or never: a group's
    window in several partials, which folds and running totals add up; a running table's
    keys copied window by window, or taken row by row.)"""
    from datafactory.expect import answers, running

    monkeypatch.setattr(answers, "GROUP_AT", group_at)
    monkeypatch.setattr(answers, "FOLD_AT", fold_at)
    monkeypatch.setattr(running, "COPY_KEYS", copy_keys)
    if fold_at > 1000:  # not even at a shard's end (as shards' partials of one group meet)
        monkeypatch.setattr(answers.Answer, "fold", answers.Answer._group)
    cfg, events = run_output
    run = cfg.run
    start = int(run.start.timestamp() * 1e6)
    result = expect.answer(cfg, start, start + int(run.duration * 1e6))
    assert set(result.tables) == {
        "sales_by_store_hour", "sales_by_category_day", "returns_by_store_day",
        "customers_by_day", "stock_by_store_sku_day", "readings_by_device_5min",
        "alerts_by_site_day", "status_changes_by_site_day", "downtime_by_device_day",
    }  # fmt: skip
    assert result.events == sum(len(v) for v in events.values())  # the run's events, all
    for name, table in result.tables.items():
        q = result.plans[name].question
        stream = next(p.event_type for p in cfg.streams if p.stream == q.stream)
        want = reference(q, events[stream], int(run.start.timestamp() + run.duration))
        got = {}
        keys = table.column_names[2 : 2 + len(q.by)]
        for r in table.to_pylist():
            key = (int(r["window_start"].timestamp()), *(r[k] for k in keys))
            got[key] = {m.name: r[m.name] for m in q.measures}
        assert set(got) == set(want), name
        for key, row in want.items():
            for m in q.measures:
                a, b = got[key][m.name], row[m.name]
                if a is None or b is None:
                    assert a is None and b is None, (name, key, m.name)
                elif m.op == "mean" or m.since is not None:
                    assert float(a) == pytest.approx(float(b), rel=1e-12), (name, key, m.name)
                else:  # (a double's JSON text is its shortest repr: the same double)
                    assert a == (float(b) if isinstance(a, float) else b), (name, key, m.name)
        assert len(want) > 0 or name == "alerts_by_site_day", name
    # windows at the run's edges: the first hour starts at 22:00, the last day is cut at 02:00
    hours = {r["window_start"].hour for r in result.tables["sales_by_store_hour"].to_pylist()}
    assert hours == {22, 23, 0, 1}
    # outages (site outages ten minutes long): counted, and their downtime at least that
    down = [r for r in result.tables["downtime_by_device_day"].to_pylist() if r["outages"]]
    assert down and all(r["downtime_s"] > 60 * r["outages"] for r in down)
    # stock on hand: every store x SKU at both days' ends, the second day's carried on
    stock = result.tables["stock_by_store_sku_day"].to_pylist()
    days = {r["window_start"].day for r in stock}
    assert days == {2, 3} and len(stock) == 2 * len({(r["store_id"], r["sku"]) for r in stock})


def test_the_answers_are_the_same_whatever_the_workers(
    run_output: tuple[Any, dict[str, list[dict]]],
) -> None:
    """Three shards answered in one process and in two worker processes: every table (and,
    under a lateness policy, the business's whole answer and each late event) the same; the
    events and the per-stream tallies too. And a sharded answer is a different business's
    (the shards' own seq spaces), not the same numbers by accident."""
    cfg, _ = run_output
    start = int(cfg.run.start.timestamp() * 1e6)
    end = start + int(cfg.run.duration * 1e6)
    policy = expect.Lateness(lag_us=0, allowed_us=0)  # every late flushed reading is late
    one, two = (expect.answer(cfg, start, end, shards=3, policy=policy, workers=w) for w in (1, 2))
    assert one.events == two.events > 0 and one.streams == two.streams
    for attr in ("tables", "business", "faults"):
        a, b = getattr(one, attr), getattr(two, attr)
        assert a.keys() == b.keys() and a, attr
        for name in a:
            assert a[name].equals(b[name]), (attr, name)
    assert sum(t.num_rows for t in one.faults.values()) > 0  # the late readings, named
    whole = expect.answer(cfg, start, end, only=["sales_by_store_hour"])
    assert not whole.tables["sales_by_store_hour"].equals(one.tables["sales_by_store_hour"])


def test_shards_running_totals_are_joined_window_by_window_or_added_up_where_groups_meet(
    run_output: tuple[Any, dict[str, list[dict]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running answer is laid out per shard (in its worker) and the shards' tables joined:
    window by window when each shard's stores come after the previous shard's, and the same
    table when they are added up and sorted instead; where one group's events are in two
    answers (a block's rows split between them), its totals are added up: the table is the
    one answer's over every row."""
    import numpy as np

    from datafactory.batch.simulate import ShardSimulation
    from datafactory.expect import answers, running
    from datafactory.pack import Shard

    cfg, _ = run_output
    start = int(cfg.run.start.timestamp() * 1e6)
    end = start + int(cfg.run.duration * 1e6)
    name = "stock_by_store_sku_day"
    joined = expect.answer(cfg, start, end, only=[name], shards=3).tables[name]
    monkeypatch.setattr(running, "_one_after_another", lambda runs, keys: False)
    added = expect.answer(cfg, start, end, only=[name], shards=3).tables[name]
    assert joined.num_rows > 0 and joined.equals(added)
    rows = list(zip(*(joined[c].to_pylist() for c in ("window_start", "store_id", "sku")),
                    strict=True))  # fmt: skip
    assert rows == sorted(rows) and len({r[0] for r in rows}) == 2  # window then key order

    p = expect.plans(cfg, [name])[name]
    whole, even, odd = (answers.Answer(p, end_us=end) for _ in range(3))
    for chunk in ShardSimulation(cfg, Shard(0, 1), start, end).chunks():
        for b in chunk.blocks:
            if b.stream == expect._event_type(cfg, p.question):
                whole.add(b)
                even.add(b.take(np.arange(0, len(b), 2)))
                odd.add(b.take(np.arange(1, len(b), 2)))
    even.fold()  # each laid out on its own, as a shard's in its worker
    odd.fold()
    assert len(even.ran) == len(odd.ran) == 1
    even.merge(odd)
    assert whole.rows == even.rows > 0 and even.table().equals(whole.table())


def test_the_command_writes_a_table_and_a_schema_per_question(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.replace("OUT", str(tmp_path / "data")))
    cli = [sys.executable, "-m", "datafactory", "expect", str(scenario), "--out"]
    for fmt in ("parquet", "json"):
        r = subprocess.run([*cli, str(tmp_path / fmt), "--format", fmt,
                            "--question", "sales_by_store_hour"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert orjson.loads(r.stdout)["questions"] == {"sales_by_store_hour": 16}  # 4 h x 4
    rows = pq.read_table(tmp_path / "parquet" / "sales_by_store_hour.parquet").to_pylist()
    lines = (tmp_path / "json" / "sales_by_store_hour.jsonl").read_text().splitlines()
    first = json.loads(lines[0], parse_float=Decimal)
    assert first["revenue"] == rows[0]["revenue"] and first["window_start"].endswith("Z")
    schema = orjson.loads((tmp_path / "json" / "sales_by_store_hour.schema.json").read_bytes())
    assert schema["window_seconds"] == 3600 and schema["columns"][-1]["name"] == "revenue"
    assert "decimal128" in schema["columns"][-1]["type"]
    for flag, value, says in (
        ("--shards", "-2", "1 to 4096"),
        ("--workers", "0", "1 to 1024"),
        ("--question", "nope", "no question 'nope'"),
    ):
        bad = subprocess.run([*cli, str(tmp_path / "x"), flag, value], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
    verify = [sys.executable, "-m", "datafactory", "verify", str(scenario), "--expected",
              str(tmp_path / "json"), "--actual", str(tmp_path / "json")]  # fmt: skip
    ok = subprocess.run(verify, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK"), ok.stdout + ok.stderr
    for tolerance in ("-1", "abc", "nan"):
        bad = subprocess.run([*verify, "--tolerance", tolerance], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert bad.returncode == 2 and "a number >= 0" in bad.stderr, bad.stderr
    bad = subprocess.run([*cli, str(tmp_path / "x"), "--question", "nope"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "no question 'nope'" in bad.stderr
    real = scenario.read_text().replace("clock: simulated, ", "")
    scenario.write_text(real)
    bad = subprocess.run([*cli, str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "give --start and --end" in bad.stderr


@pytest.mark.parametrize(
    ("question", "says"),
    [
        (Question("q", "pos_transaction", 60, ("nope",), (Measure("n", "count"),)), "no field"),
        (Question("q", "pos_transaction", 60, ("items",), (Measure("n", "count"),)),
         "not a value"),
        (Question("q", "pos_transaction", 0, (), (Measure("n", "count"),)), "positive"),
        (Question("q", "pos_transaction", 60, (), (Measure("n", "max", "items.quantity"),)),
         "summed"),
        (Question("q", "pos_transaction", 60, (), (Measure("n", "sum"),)), "sum of which"),
        (Question("q", "pos_transaction", 60, (),
                  (Measure("n", "sum", "event_time", since="customer_id"),)), "timestamp field"),
        (Question("q", "pos_transaction", 60, (), (Measure("n", "count", "total", since="x"),)),
         "a span is summed"),
        (Question("q", "pos_transaction", 60, (), (Measure("n", "max", "total"),), running=True),
         "a running total is a count or sum"),
    ],
)  # fmt: skip
def test_a_question_the_schema_cannot_answer_is_refused(question: Question, says: str) -> None:
    from datafactory.schema import load_schema

    with pytest.raises(ValueError, match=says):
        plan(question, load_schema("retail.pos_transaction").fields)


def test_an_answer_sent_from_a_worker_pickles_at_its_own_size() -> None:
    """A group-by's output columns are slices of bigger buffers, and pickling a slice takes
    its whole buffer: an answer is pickled with its tables in buffers of their own."""
    import pickle

    import numpy as np
    import pyarrow as pa

    from datafactory.expect.answers import Answer
    from datafactory.schema import load_schema

    q = Question("q", "pos_transaction", 3600, ("store_id",), (Measure("n", "count"),))
    a = Answer(plan(q, load_schema("retail.pos_transaction").fields))
    big = pa.table({"window": np.arange(1_000_000), "k0": pa.array(["S1"] * 1_000_000)})
    a.partials = [big.slice(10, 100)]
    a.pending = [big.slice(500, 50)]
    sent = pickle.dumps(a)
    assert len(sent) < 20_000, len(sent)  # (the whole buffers: over 8 MB)
    back = pickle.loads(sent)
    assert back.partials[0].equals(big.slice(10, 100)) and back.pending[0].equals(
        big.slice(500, 50)
    )


def _payer(doc: dict[str, Any]) -> str:
    """The insurer's identifier, as a FHIR reader finds it (a contained Organization)."""
    ref = doc["insurer"]["reference"].removeprefix("#")
    org = next(c for c in doc["contained"] if c["id"] == ref)
    return str(org["identifier"][0]["value"])


def test_healthcare_answers_per_payer_are_what_the_fhir_documents_say(tmp_path: Path) -> None:
    """Every claim and claim response the run wrote, read as FHIR (insurer, outcome,
    payment.amount, each line's adjudication reason), gives expect's answers."""
    path = tmp_path / "hc.yaml"
    path.write_text(
        'run: {name: hc, seed: 3, clock: simulated, start: "2026-03-02T00:00:00Z", '
        "duration: 21d}\npacks: {healthcare: {params: {patients: 8000}}}\n"
        f"sinks: {{out: {{type: file, path: {tmp_path / 'out'}, format: json}}}}\n"
        "telemetry: {enabled: false}\n"
    )
    cfg = load_config(path)
    asyncio.run(Engine(cfg).run())
    start = int(cfg.run.start.timestamp() * 1e6)
    result = expect.answer(cfg, start, start + 21 * 86_400_000_000)

    def docs(stream: str) -> list[dict[str, Any]]:
        folder = tmp_path / "out" / "healthcare" / stream
        return [orjson.loads(x) for f in sorted(folder.glob("*.jsonl"))
                for x in f.read_bytes().splitlines()]  # fmt: skip

    def day(doc: dict[str, Any]) -> dt.datetime:
        t = dt.datetime.fromisoformat(doc["created"].replace("Z", "+00:00"))
        return t.replace(hour=0, minute=0, second=0, microsecond=0)

    want: dict[str, dict[tuple[Any, ...], Any]] = defaultdict(lambda: defaultdict(int))
    for c in docs("claim"):
        want["claims_by_payer_day"][(day(c), _payer(c))] += 1
    status = {"complete": "complete", "partial": "partial", "error": "denied"}
    for r in docs("claim_response"):
        key = (day(r), _payer(r), status[r["outcome"]])
        got = want["adjudications_by_payer_day"].get(key, (0, Decimal(0)))
        paid = Decimal(str(r["payment"]["amount"]["value"])).quantize(Decimal("0.01"))
        want["adjudications_by_payer_day"][key] = (got[0] + 1, got[1] + paid)
        for item in r["item"]:
            for a in item["adjudication"]:
                if "reason" in a:
                    carc = a["reason"]["coding"][0]["code"]
                    want["denials_by_carc_day"][(day(r), _payer(r), carc)] += 1
    for question, expected in want.items():
        measures = [m.name for m in result.plans[question].question.measures]
        got = {}
        for r in result.tables[question].to_pylist():
            keys = [k for k in r if k not in ("window_start", "window_end", *measures)]
            got[(r["window_start"], *(r[k] for k in keys))] = tuple(r[m] for m in measures)
        expected = {k: v if isinstance(v, tuple) else (v,) for k, v in expected.items()}
        assert len(expected) > 10 and got == expected, question
    assert {k[2] for k in want["adjudications_by_payer_day"]} == {"complete", "partial", "denied"}


def test_a_running_totals_wrong_windows_are_explained_by_every_earlier_fault() -> None:
    """A duplicate counted on day 1 makes day 1's stock and every later day's wrong: each is
    explained by it (the faults up to the window's end), and a later one by both."""
    import pyarrow as pa

    from datafactory.expect.compare import compare

    day = 86_400_000_000
    ts = pa.timestamp("us", tz="UTC")

    def table(rows: list[tuple[int, int, int]], extra: dict[str, list[Any]] | None = None):  # type: ignore[no-untyped-def]
        cols = {
            "window_start": pa.array([w * day for w, _, _ in rows], ts),
            "window_end": pa.array([(w + 1) * day for w, _, _ in rows], ts),
            "sku": pa.array(["A"] * len(rows)),
            "on_hand": pa.array([o for _, o, _ in rows], pa.int64()),
            "movements": pa.array([m for _, _, m in rows], pa.int64()),
        }
        return pa.table({**cols, **(extra or {})})

    doc = {
        "question": "stock", "running": True,
        "measures": [{"name": "on_hand", "op": "sum"}, {"name": "movements", "op": "count"}],
        "columns": [{"name": c} for c in ("window_start", "window_end", "sku", "on_hand",
                                          "movements")],
    }  # fmt: skip
    want = table([(0, 10, 2), (1, 15, 3), (2, 15, 3)])
    got = table([(0, 13, 3), (1, 18, 4), (2, 16, 5)])  # day 3: another copy, of day 3's
    faults = table([(0, 3, 1), (2, 1, 1)], {"fault": ["duplicated"] * 2, "event_id": ["e1", "e2"]})
    report = compare(doc, want, got, faults)
    assert report["wrong"] == 3 and report["explained"] == 3
    events = [w["events"]["duplicated"] for w in report["windows_wrong"]]
    assert events == [["e1"], ["e1"], ["e1", "e2"]]
    assert all(w["explained_by"] == ["duplicated"] for w in report["windows_wrong"])
    doc["running"] = False  # as windows of their own, days 2 and 3 are not explained so
    assert compare(doc, want, got, faults)["explained"] == 1
