"""``datafactory verify --expected``: a platform's result tables against the expected
answers, window by window, and the events that explain each window that differs.

The platform's tables come from a folder (``<question>.parquet`` or ``.jsonl``, as
``expect`` writes them), a DuckDB database (``duckdb://PATH``: ``duckdb://data/p.duckdb``,
``duckdb:///abs/p.duckdb``) or PostgreSQL
(``postgresql://...``): one table per question, named by it, with the expected table's
columns (``window_start``, the keys, the measures; more are ignored). A window differs when
it is missing, extra, or a measure is off by more than the tolerance. For each, the events
chaos touched in it are named by fate (``expect``'s ``<question>.faults``), and where the
platform's counts are the expected ones plus exactly the contributions of some fates
(duplicates counted again, rejected events counted), those fates are said to explain it
(``sums_match``: its sums too). A group the business never had (an invalid record's corrupted
key, counted) lists the events rejected in its window as ``candidates``.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from datafactory.expect.fates import DUPLICATED, LAGGING, LATE, REJECTED

Key = tuple[Any, ...]
Row = dict[str, Any]
# how a platform's numbers go wrong, each fate's events: counted again (duplicates), counted
# though invalid, counted though later than the policy allows (+1), or not counted though
# within the allowed lateness (-1). (A dropped event never reached it.)
SIGN = {DUPLICATED: 1, REJECTED: 1, LATE: 1, LAGGING: -1}
SHOWN = 20  # windows shown per question in the text report (the JSON has them all)


class CompareError(Exception):
    """The tables cannot be compared (missing, unreadable, without a column)."""


def read_expected(folder: Path, question: str, suffix: str = "") -> pa.Table | None:
    for ext in ("parquet", "jsonl"):
        path = folder / f"{question}{suffix}.{ext}"
        if path.is_file():
            return _read_file(path)
    return None


def _read_file(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        return pajson.read_json(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise CompareError(f"{path}: cannot read: {e}") from None


def read_actual(source: str, question: str) -> pa.Table:
    """The platform's table for ``question``."""
    if source.startswith("duckdb://"):
        return _duckdb(source.removeprefix("duckdb://"), question)
    if source.startswith(("postgresql://", "postgres://")):
        return _postgres(source, question)
    folder = Path(source.removeprefix("file://"))
    table = read_expected(folder, question)
    if table is None:
        raise CompareError(
            f"{folder}: no {question}.parquet or {question}.jsonl (--question: check only some)"
        )
    return table


def _duckdb(path: str, question: str) -> pa.Table:
    try:
        import duckdb
    except ImportError:
        raise CompareError("reading DuckDB needs the duckdb package (pip install duckdb)") from None
    try:
        with duckdb.connect(path, read_only=True) as con:
            return con.sql(f'SELECT * FROM "{question}"').to_arrow_table()
    except duckdb.Error as e:
        raise CompareError(
            f"duckdb {path}: table {question!r}: {e} (--question: check only some)"
        ) from None


def _postgres(url: str, question: str) -> pa.Table:
    import asyncio

    import asyncpg

    async def fetch() -> list[Any]:
        con = await asyncpg.connect(url)
        try:
            return list(await con.fetch(f'SELECT * FROM "{question}"'))
        finally:
            await con.close()

    try:
        rows = asyncio.run(fetch())
    except (OSError, asyncpg.PostgresError) as e:
        raise CompareError(
            f"postgresql: table {question!r}: {e} (--question: check only some)"
        ) from None
    return pa.Table.from_pylist([dict(r) for r in rows])


def rows_by_key(table: pa.Table, keys: list[str], measures: list[str]) -> dict[Key, Row]:
    """(window start in epoch seconds, the keys) -> the measures, as exact values. Rows
    without a window (a platform's of events whose time it could not read) are counted
    under the key ``(None,)``."""
    for name in ["window_start", *keys, *measures]:
        if name not in table.column_names:
            raise CompareError(f"no column {name!r} (columns: {', '.join(table.column_names)})")
    out: dict[Key, Row] = {}
    for r in table.select(["window_start", *keys, *measures]).to_pylist():
        if r["window_start"] is None:
            unplaced = out.setdefault((None,), {"rows": 0})
            unplaced["rows"] += 1
            continue
        key = (_epoch(r["window_start"]), *(_text(r[k]) for k in keys))
        out[key] = {m: _num(r[m]) for m in measures}
    return out


def _epoch(v: Any) -> int:
    if isinstance(v, dt.datetime):
        return int((v if v.tzinfo else v.replace(tzinfo=dt.UTC)).timestamp())
    if isinstance(v, str):
        return _epoch(dt.datetime.fromisoformat(v.replace("Z", "+00:00")))
    raise CompareError(f"window_start {v!r} is not a time")


def _text(v: Any) -> Any:
    return None if v is None else str(v)


def _num(v: Any) -> Decimal | None:
    if v is None:
        return None
    return v if isinstance(v, Decimal) else Decimal(repr(v) if isinstance(v, float) else str(v))


def compare(
    doc: dict[str, Any],
    expected: pa.Table,
    actual: pa.Table,
    faults: pa.Table | None,
    tolerance: Decimal = Decimal(0),
) -> dict[str, Any]:
    """Window by window: what differs, and what explains it. ``doc``: the question's schema
    file (``expect``'s ``<question>.schema.json``)."""
    measures = [m["name"] for m in doc["measures"]]
    columns = [c["name"] for c in doc["columns"]]
    keys = columns[2 : len(columns) - len(measures)]
    counts = [m["name"] for m in doc["measures"] if m["op"] == "count"]
    sums = [m["name"] for m in doc["measures"] if m["op"] == "sum"]
    want = rows_by_key(expected, keys, measures)
    try:
        got = rows_by_key(actual, keys, measures)
    except CompareError as err:
        raise CompareError(f"the platform's {doc['question']}: {err}") from None
    touched = _fault_index(faults, keys, counts + sums) if faults is not None else {}
    if doc.get("running"):  # an event counts in its window's total and every later one's
        touched = _accumulated(touched, set(want) | set(got))
    unplaced = got.pop((None,), {}).get("rows", 0)
    wrong = []
    for key in sorted(set(want) | set(got), key=_order):
        e, a = want.get(key), got.get(key)
        off = _off(e, a, measures, tolerance)
        if not off:
            continue
        entry: dict[str, Any] = {
            "window_start": dt.datetime.fromtimestamp(key[0], dt.UTC).isoformat(),
            **dict(zip(keys, key[1:], strict=True)),
            "expected": _show(e),
            "actual": _show(a),
            "off": off,
        }
        entry.update(_explain(e, a, counts, sums, touched.get(key, {})))
        if e is None:  # a group the business never had (a key chaos corrupted?): the events
            entry["candidates"] = sorted(  # rejected in its window, whatever their keys
                {i for k, fates in touched.items() if k[0] == key[0]
                 for i in fates.get(REJECTED, {}).get("events", ())}
            )  # fmt: skip
        wrong.append(entry)
    return {
        "question": doc["question"],
        "windows": len(want),
        "windows_reported": len(got),
        "wrong": len(wrong) + (1 if unplaced else 0),
        "explained": sum(1 for w in wrong if w["explained_by"]),
        "rows_without_window": unplaced,  # the platform's rows with no window_start
        "windows_wrong": wrong,
    }


def _order(key: Key) -> tuple[Any, ...]:
    return tuple("" if k is None else k for k in key)


def _off(
    e: dict[str, Any] | None, a: dict[str, Any] | None, measures: list[str], tol: Decimal
) -> list[str]:
    if e is None or a is None:
        return ["missing" if a is None else "extra"]
    out = []
    for m in measures:
        x, y = e[m], a[m]
        if (x is None) != (y is None) or (x is not None and abs(x - y) > tol):
            out.append(m)
    return out


def _show(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: (None if v is None else str(v)) for k, v in row.items()}


def _fault_index(
    faults: pa.Table, keys: list[str], measures: list[str]
) -> dict[Key, dict[str, Any]]:
    """(window, keys) -> fate -> (its events' ids, the sum of their contributions)."""
    out: dict[Key, dict[str, Any]] = {}
    for r in faults.to_pylist():
        key = (_epoch(r["window_start"]), *(_text(r[k]) for k in keys))
        fate = out.setdefault(key, {}).setdefault(r["fault"], {"events": [], "sum": {}})
        fate["events"].append(r["event_id"])
        for m in measures:
            v = _num(r.get(m))
            if v is not None:
                fate["sum"][m] = fate["sum"].get(m, Decimal(0)) + v
    return out


def _accumulated(index: dict[Key, dict[str, Any]], windows: set[Key]) -> dict[Key, dict[str, Any]]:
    """A running question's faults: at each window, every fate's events up to its end."""
    by_group: dict[Key, list[tuple[int, dict[str, Any]]]] = {}
    for key, fates in index.items():
        by_group.setdefault(key[1:], []).append((key[0], fates))
    out: dict[Key, dict[str, Any]] = {}
    for key in windows:
        if key == (None,):
            continue
        so_far: dict[str, Any] = {}
        for window, fates in by_group.get(key[1:], ()):
            if window > key[0]:
                continue
            for f, v in fates.items():
                acc = so_far.setdefault(f, {"events": [], "sum": {}})
                acc["events"] += v["events"]
                for m, x in v["sum"].items():
                    acc["sum"][m] = acc["sum"].get(m, Decimal(0)) + x
        if so_far:
            out[key] = so_far
    return out


def _explain(e: Row | None, a: Row | None, counts: list[str], sums: list[str], fates: Row) -> Row:
    """The fates whose events make the expected counts the platform's: duplicates counted
    again, rejected events counted (``sums_match``: their sums too; a rejected event's own
    numbers may be what was corrupted, so its sum need not)."""
    named = {f: sorted(set(v["events"])) for f, v in fates.items()}
    counted = {f: len(set(v["events"])) for f, v in fates.items()}
    explained: list[str] = []
    sums_match = False
    on = counts or sums
    if a is not None and on:
        base = e or {m: Decimal(0) for m in [*counts, *sums]}

        def fit(combo: tuple[str, ...], m: str) -> bool:
            return bool(
                (base[m] or 0) + sum(fates[f]["sum"].get(m, 0) for f in combo) == (a[m] or 0)
            )

        # of the fates' combinations that make the counts, the one that makes the most sums
        # too (a duplicate's numbers are its event's; a rejected event's may be corrupted)
        options = [f for f in SIGN if f in fates]
        best: tuple[int, int] | None = None
        for combo in (c for n in range(1, len(options) + 1)
                      for c in itertools.combinations(options, n)):  # fmt: skip
            if all(fit(combo, m) for m in on):
                score = (sum(fit(combo, m) for m in sums), -len(combo))
                if best is None or score > best:
                    best, explained = score, list(combo)
                    sums_match = score[0] == len(sums)
    return {"explained_by": explained, "sums_match": sums_match, "events": named,
            "event_counts": counted}  # fmt: skip


def verify_expected(
    expected: Path,
    actual: str,
    only: list[str] | None = None,
    tolerance: Decimal = Decimal(0),
    max_wrong: int = 0,
) -> dict[str, Any]:
    """Every question ``expect`` answered into ``expected`` (or ``only`` these), against the
    platform's tables at ``actual``; ``failures`` lists each question with more than
    ``max_wrong`` windows wrong."""
    import orjson

    docs = sorted(expected.glob("*.schema.json"))
    if not docs:
        raise CompareError(f"{expected}: no expected answers (run datafactory expect first)")
    questions = {}
    for path in docs:
        doc = orjson.loads(path.read_bytes())
        if only is None or doc["question"] in only:
            questions[doc["question"]] = doc
    missing = [q for q in only or () if q not in questions]
    if missing:
        raise CompareError(f"{expected}: no expected answer to {', '.join(missing)}")
    report: dict[str, Any] = {"questions": {}, "failures": []}
    for name, doc in questions.items():
        want = read_expected(expected, name)
        if want is None:
            raise CompareError(f"{expected}: {name}'s table is missing")
        faults = read_expected(expected, name, ".faults")
        result = compare(doc, want, read_actual(actual, name), faults, tolerance)
        report["questions"][name] = result
        if result["wrong"] > max_wrong:
            report["failures"].append(
                f"{name}: {result['wrong']} of {result['windows']} windows wrong "
                f"({result['explained']} explained by chaos the platform let through)"
            )
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for name, r in report["questions"].items():
        lines.append(f"{name}: {r['windows']} windows expected, {r['windows_reported']} "
                     f"reported, {r['wrong']} wrong ({r['explained']} explained)")  # fmt: skip
        if r["rows_without_window"]:
            lines.append(f"  {r['rows_without_window']} rows without a window_start")
        for w in r["windows_wrong"][:SHOWN]:
            keys = {k: v for k, v in w.items() if k not in _ENTRY}
            why = ", ".join(w["explained_by"]) or "not by chaos"
            lines.append(f"  {w['window_start']} {keys}: {', '.join(w['off'])} off ({why})")
            for fate in w["explained_by"]:
                ids = w["events"][fate]
                more = f", ... ({len(ids)})" if len(ids) > 5 else ""
                lines.append(f"    {fate}: {', '.join(ids[:5])}{more}")
            also = [f"{f} {n}" for f, n in w["event_counts"].items() if f not in w["explained_by"]]
            if also:
                lines.append(f"    also touched by chaos: {', '.join(also)} events")
    lines += [f"FAIL {f}" for f in report["failures"]] or ["OK"]
    return "\n".join(lines)


_ENTRY = {"window_start", "expected", "actual", "off", "explained_by", "sums_match", "events",
          "event_counts", "candidates"}  # fmt: skip
