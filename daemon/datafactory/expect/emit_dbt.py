"""``expect --emit dbt``: the expected answers as a dbt package whose tests check a platform.

The package (``<out>/dbt``) holds, per question, the expected table as a seed
(``expected_<question>``, its column types declared) and a test that compares the user's model
of that question with it window by window: a row per window (and group) that is missing, extra,
or whose numbers differ by more than ``datafactory_tolerance``. Per stream, two tests of the
platform's staged events table: it holds as many events as a correct platform keeps (each
once, none chaos dropped or it must reject), and its ``event_id`` is unique.

A project uses it as any local package (``packages.yml``: ``- local: <out>/dbt``), then ``dbt
deps``, ``dbt seed`` and ``dbt test``. Its models are found by name: the question's own
(``sales_by_store_hour``) unless the var ``datafactory_model_<question>`` names another; every
question is tested unless the var ``datafactory_questions`` lists some; the events tests run
where the var ``datafactory_events_<stream>`` names the staged model
(``datafactory_events_pos_transaction: stg_pos``). Windows are compared in UTC: a model's
``window_start`` is a timestamp of the window's start in UTC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

from datafactory.expect.questions import Question
from datafactory.expect.run import Answers

PACKAGE = "datafactory_expected"


def sql_type(t: pa.DataType) -> str:
    """The column type a seed declares for an expected column (standard SQL)."""
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision}, {t.scale})"
    if pa.types.is_integer(t):
        return "bigint"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_boolean(t):
        return "boolean"
    return "varchar"


def seed_table(t: pa.Table) -> pa.Table:
    """Times as UTC without a zone (a seed's ``timestamp``), the rest as they are."""
    cols = [c.cast(pa.timestamp("us")) if pa.types.is_timestamp(c.type) else c for c in t.columns]
    return pa.table(cols, names=t.column_names)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def compare_sql(q: Question, table: pa.Table) -> str:
    """A dbt test: the windows where the model and the expected seed differ."""
    question = q.name
    measures = [m.name for m in q.measures]
    keys = table.column_names[2 : len(table.column_names) - len(measures)]
    ts = {"window_start"}
    cols = ["window_start", *keys, *measures]

    def side(alias: str, source: str) -> str:
        picked = ", ".join(
            f"cast({_ident(c)} as timestamp) as {_ident(c)}" if c in ts else _ident(c) for c in cols
        )
        return f"{alias} as (\n    select {picked}, 1 as df_present\n    from {source}\n)"

    on = " and ".join(
        f"(e.{_ident(k)} = a.{_ident(k)} or (e.{_ident(k)} is null and a.{_ident(k)} is null))"
        for k in ["window_start", *keys]
    )
    off = [
        f"(e.{m} is null) <> (a.{m} is null)\n"
        f"       or abs(e.{m} - a.{m}) > {{{{ var('datafactory_tolerance', 0) }}}}"
        for m in map(_ident, measures)
    ]
    both = [f"e.{_ident(m)} as {_ident('expected_' + m)}, a.{_ident(m)} as "
            f"{_ident('actual_' + m)}" for m in measures]  # fmt: skip
    shown = ",\n       ".join(
        [f"coalesce(e.{c}, a.{c}) as {c}" for c in map(_ident, ["window_start", *keys])] + both
    )
    model = f"ref(var('datafactory_model_{question}', '{question}'))"
    chosen = "var('datafactory_questions', none)"
    return f"""{{{{ config(enabled={chosen} is none or '{question}' in {chosen}) }}}}
-- {question}: {q.doc or "expected answers"}
-- Fails with a row per window (and group) where the model differs from the expected answer
-- (made by datafactory expect): missing, extra, or a number off by more than the tolerance.
with {side("e", f"{{{{ ref('expected_{question}') }}}}")},
{side("a", f"{{{{ {model} }}}}")}
select {shown},
       case when e.df_present is null then 'extra'
            when a.df_present is null then 'missing' else 'differs' end as problem
from e full outer join a on {on}
where e.df_present is null or a.df_present is null
   or {(chr(10) + "   or ").join(off)}
"""


def stream_tests(stream: str, kept: int) -> dict[str, str]:
    """The staged events table's tests: its row count, and one row per event id."""
    name = stream.split(".", 1)[1]
    var = f"datafactory_events_{name}"
    head = f"{{{{ config(enabled=var('{var}', none) is not none) }}}}\n"
    model = f"{{{{ ref(var('{var}', '{name}')) }}}}"
    return {
        f"events_{name}_count": head
        + f"-- {stream}: a correct platform keeps {kept} events (each once; none that chaos "
        "dropped or that it must reject)\n"
        f"select count(*) as actual, {kept} as expected from {model}\n"
        f"having count(*) <> {kept}\n",
        f"events_{name}_unique": head
        + f"-- {stream}: each event once (duplicates removed by event_id)\n"
        f"select event_id, count(*) as copies from {model}\n"
        "group by event_id having count(*) > 1\n",
    }


def write(result: Answers, out: Path) -> list[Path]:
    """The package in ``out``: dbt_project.yml, seeds, tests, a README."""
    (out / "seeds").mkdir(parents=True, exist_ok=True)
    (out / "tests").mkdir(exist_ok=True)
    files: list[Path] = []
    seeds: dict[str, Any] = {}
    for name, table in result.tables.items():
        path = out / "seeds" / f"expected_{name}.csv"
        pacsv.write_csv(seed_table(table), path)
        seeds[f"expected_{name}"] = {
            "+column_types": {f.name: sql_type(f.type) for f in table.schema}
        }
        files += [path, _text(out / "tests" / f"expected_{name}.sql",
                              compare_sql(result.plans[name].question, table))]  # fmt: skip
    for stream, tally in result.streams.items():
        for test, sql in stream_tests(stream, tally.kept).items():
            files.append(_text(out / "tests" / f"{test}.sql", sql))
    project = {
        "name": PACKAGE,
        "version": "1.0.0",
        "config-version": 2,
        "seed-paths": ["seeds"],
        "test-paths": ["tests"],
        "seeds": {PACKAGE: seeds},
    }
    # JSON is YAML: the project file needs no YAML writer
    text = orjson.dumps(project, option=orjson.OPT_INDENT_2).decode()
    files.append(_text(out / "dbt_project.yml", text))
    files.append(_text(out / "README.md", _readme(result)))
    return files


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _readme(result: Answers) -> str:
    questions = "\n".join(f"- `{n}`: {result.plans[n].question.doc}" for n in result.tables)
    streams = "\n".join(
        f"- `{s}`: {t.kept} events kept (of {t.made} made)" for s, t in result.streams.items()
    )
    return f"""# {PACKAGE}: the answers your models must give (made by `datafactory expect`)

In your dbt project's `packages.yml`:

    packages:
      - local: <this folder>

then `dbt deps && dbt seed && dbt test`. Each question's test compares your model of the same
name (or the one the var `datafactory_model_<question>` names; the var `datafactory_questions`:
a list of the questions to test, default all) with the seed
`expected_<question>`, window by window (`window_start` in UTC, the group columns, the
measures); a failing row is a window that is missing, extra or off by more than the var
`datafactory_tolerance` (default 0: exact). The events tests run on your staged table of a
stream where the var `datafactory_events_<stream>` names it: its row count, and one row per
`event_id`.

Questions:
{questions}

Streams:
{streams}
"""
