"""Template objects (nested records), dates, and templates in files of their own: made per
event, named in expressions, typed in the derived schema, written by every format; their
errors name the file, line and field."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import fastavro
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from datafactory.config import ConfigError, load_config, parse_config
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.engine import Engine
from datafactory_template import TemplatePack
from tests.batch_cli import run_batch

N = 100_000
T0 = 1_772_409_600_000_000  # 2026-03-02T00:00:00Z
ORDERS = """
run: {name: nested, seed: 4, clock: simulated, start: "2026-03-02T00:00:00Z", duration: 20s}
packs:
  template:
    params:
      entities:
        customers:
          count: 500
          fields:
            customer_id: {gen: pattern, pattern: "C{seq:05d}"}
            born: {gen: date, between: ["1950-01-01", "2005-12-31"]}
      streams:
        orders:
          fields:
            price: {gen: uniform, min: 5, max: 50, decimals: 2}
            ship:
              gen: object
              fields:
                city: {gen: words, list: cities}
                cost: {gen: uniform, min: 1, max: 9, decimals: 2}
                due: {gen: date, offset: [1, 5]}
                geo:
                  gen: object
                  null_rate: 0.1
                  fields:
                    lat: {gen: uniform, min: -60, max: 60}
                    zone: {gen: uniform, min: 1, max: 9, integer: true}
                    code: {gen: expr, expr: "zone * 100", integer: true}
            bill:
              gen: object
              fields:
                geo:
                  gen: object
                  fields:
                    lat: {gen: uniform, min: -60, max: 60}
                customer: {gen: ref, entity: customers, field: customer_id}
                born: {gen: lookup, ref: customer, field: born}
            total: {gen: expr, expr: "price + ship.cost + ship.geo.zone", decimals: 2}
            placed_on: {gen: date}
            week: {gen: date, offset: [-3, 3], null_rate: 0.2}
    streams:
      orders: {rate: {profile: constant, base: 50}}
sinks: {out: {type: file, path: OUT, format: FORMAT}}
telemetry: {enabled: false}
"""


def pack() -> TemplatePack:
    cfg = parse_config(ORDERS.replace("FORMAT", "json").replace("OUT", "/tmp/unused"))
    return TemplatePack(cfg.pack_params["template"], SeedTree(4))


def day(us: int) -> int:
    return us // 86_400_000_000


def test_objects_and_dates_follow_their_fields() -> None:
    gen = pack().stream("orders")
    times = T0 + np.arange(N, dtype=np.int64) * 3_000_000  # ~3.5 days of events
    records = gen.generate(0, times).to_records(4)
    events = [day(int(t)) for t in times]
    # an object per event, its own fields in it; nested null rates per object
    geo_null = np.mean([r["ship"]["geo"] is None for r in records])
    assert abs(geo_null - 0.1) < 0.005
    assert all(r["bill"]["geo"] is not None for r in records)
    due = np.array([r["ship"]["due"] - e for r, e in zip(records, events, strict=True)])
    assert due.min() == 1 and due.max() == 5
    assert np.allclose(np.bincount(due)[1:] / N, 0.2, atol=0.006)  # uniform, both ends
    assert all(r["placed_on"] == e for r, e in zip(records, events, strict=True))
    week = [r["week"] - e for r, e in zip(records, events, strict=True) if r["week"] is not None]
    assert abs(len(week) / N - 0.8) < 0.006 and {min(week), max(week)} == {-3, 3}
    for r in records[:2000]:  # derived fields: exact, over objects' numbers at any depth
        geo = r["ship"]["geo"]
        if geo is not None:  # (in cents: zone is a whole number)
            assert r["total"] == r["price"] + r["ship"]["cost"] + geo["zone"] * 100
            assert geo["code"] == geo["zone"] * 100
    # a lookup inside an object: the member its ref picked
    born = {r["bill"]["customer"]: r["bill"]["born"] for r in records}
    assert len(born) == 500
    first, last = (
        dt.date(y, m, d) - dt.date(1970, 1, 1) for y, m, d in ((1950, 1, 1), (2005, 12, 31))
    )
    assert min(born.values()) >= first.days and max(born.values()) <= last.days
    assert all(born[r["bill"]["customer"]] == r["bill"]["born"] for r in records)


def test_the_derived_schema_names_every_record_once_and_types_dates() -> None:
    schema = pack().stream("orders").schema
    fields = {f["name"]: f["type"] for f in schema.fields}
    assert fields["ship"]["type"] == "record" and fields["ship"]["name"] == "Ship"
    geo = next(f for f in fields["ship"]["fields"] if f["name"] == "geo")["type"]
    assert geo[0] == "null" and geo[1]["name"] == "ShipGeo"  # nullable: its null rate
    bill_geo = next(f for f in fields["bill"]["fields"] if f["name"] == "geo")["type"]
    assert bill_geo["name"] == "BillGeo"  # the same field name in another object: no clash
    assert fields["placed_on"] == {"type": "int", "logicalType": "date"}
    assert fields["week"] == ["null", {"type": "int", "logicalType": "date"}]
    born = next(f for f in fields["bill"]["fields"] if f["name"] == "born")["type"]
    assert born == {"type": "int", "logicalType": "date"}  # a lookup has its field's type


def day_of_history(tmp_path: Path) -> Path:
    """A day of history as Parquet (batch mode), at 0.05 events/s."""
    cfg = tmp_path / "orders.yaml"
    cfg.write_text(ORDERS.replace("base: 50", "base: 0.05").replace("FORMAT", "json")
                   .replace("OUT", str(tmp_path / "unused")))  # fmt: skip
    return run_batch(cfg, tmp_path / "lake", "2026-03-02", "2026-03-02")


@pytest.mark.parametrize("fmt", ["json", "avro", "parquet"])
def test_objects_and_dates_run_through_the_engine_in_every_format(tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        files = sorted(day_of_history(tmp_path).rglob("*.parquet"))
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        assert len(rows) == 4320  # a day at 0.05/s
    else:
        cfg = parse_config(ORDERS.replace("FORMAT", fmt).replace("OUT", str(tmp_path)))
        summary = asyncio.run(Engine(cfg).run())
        assert summary["streams"]["template.orders"]["released"] == 1000
        files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".json")
        if fmt == "json":
            rows = [orjson.loads(x) for f in files for x in f.read_bytes().splitlines()]
        else:
            rows = [r for f in files for r in fastavro.reader(io.BytesIO(f.read_bytes()))]
        assert len(rows) == 1000
    for r in rows:
        t = r["event_time"]
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00")) if isinstance(t, str) else t
        placed = r["placed_on"]
        placed = dt.date.fromisoformat(placed) if isinstance(placed, str) else placed
        assert placed == when.date()
        price, cost = (Decimal(str(x)) for x in (r["price"], r["ship"]["cost"]))
        zone = r["ship"]["geo"]["zone"] if r["ship"]["geo"] is not None else None
        if zone is not None:
            assert Decimal(str(r["total"])) == price + cost + zone
        assert isinstance(r["bill"]["customer"], str)


@pytest.mark.parametrize(
    ("field", "where", "says"),
    [
        ("{gen: expr, expr: 'ship.nope + 1'}", "fields.bad.expr", "no number 'ship.nope'"),
        ("{gen: expr, expr: 'ship * 2'}", "fields.bad.expr", "no field 'ship'"),
        ("{gen: object, fields: {Bad: {gen: uuid}}}", "fields.bad.object", "field name 'Bad'"),
        ("{gen: object, fields: {}}", "fields.bad.object.fields", "at least 1"),
        (
            "{gen: array, length: {max: 2}, items: {o: {gen: object, fields: "
            "{a: {gen: array, length: {max: 1}, items: {x: {gen: uuid}}}}}}}",
            "fields.bad.array",
            "item field 'o.a': arrays of arrays",
        ),
        ("{gen: date, offset: [3, 1]}", "fields.bad.date", "from <= to"),
        (
            "{gen: date, offset: [0, 1], between: [2020-01-01, 2020-02-01]}",
            "fields.bad.date",
            "one",
        ),
        ("{gen: date, between: [2020-02-01, 2020-01-01]}", "fields.bad.date", "first is not"),
        ("{gen: date, offset: [0, 100000]}", "fields.bad.date", "200 years"),
        ("{gen: date, between: [2020-01-01, nope]}", "fields.bad.date.between.1", "date"),
    ],
)
def test_object_and_date_errors_name_the_field(field: str, where: str, says: str) -> None:
    text = f"""run: {{name: t, seed: 1}}
packs:
  template:
    params:
      streams:
        orders:
          fields:
            ship: {{gen: object, fields: {{cost: {{gen: uniform, min: 1, max: 2}}}}}}
            bad: {field}
sinks: {{out: {{type: stdout}}}}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, source="shop.yaml")
    message = str(e.value)
    assert "shop.yaml:9:" in message and f"streams.orders.{where}" in message, message
    assert says in message, message


def test_an_entity_date_is_between_two_dates() -> None:
    text = ORDERS.replace('born: {gen: date, between: ["1950-01-01", "2005-12-31"]}',
                          "born: {gen: date, offset: [-9000, 0]}")  # fmt: skip
    with pytest.raises(ConfigError, match="a date is between two dates"):
        parse_config(text.replace("FORMAT", "json").replace("OUT", "/tmp/x"))


SCENARIO = """run: {name: filed, seed: 4, clock: simulated, start: "2026-03-02T00:00:00Z", duration: 20s}
packs:
  template:
    params_file: templates/shop.yaml
    params:
      entities: {customers: {count: 77}}
    streams:
      orders: {rate: {profile: constant, base: 50}}
sinks: {out: {type: file, path: OUT, format: json}}
telemetry: {enabled: false}
"""
SHOP = """# the shop's own event shapes
entities:
  customers:
    count: 500
    fields:
      customer_id: {gen: pattern, pattern: "C{seq:05d}"}
streams:
  orders:
    fields:
      customer: {gen: ref, entity: customers, field: customer_id}
      price: {gen: uniform, min: 5, max: 50, decimals: 2}
      total: {gen: expr, expr: "price * 2", decimals: 2}
"""


def scenario(tmp_path: Path, shop: str = SHOP, text: str = SCENARIO) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "shop.yaml").write_text(shop)
    path = tmp_path / "scenario.yaml"
    path.write_text(text.replace("OUT", str(tmp_path / "out")))
    return path


def test_a_template_in_its_own_file_runs_with_the_scenarios_params_over_it(
    tmp_path: Path,
) -> None:
    cfg = load_config(scenario(tmp_path))
    assert cfg.pack_params["template"].entities["customers"].count == 77  # the scenario's
    summary = asyncio.run(Engine(cfg).run())
    assert summary["streams"]["template.orders"]["released"] == 1000
    rows = [orjson.loads(x) for f in (tmp_path / "out").rglob("*.jsonl")
            for x in f.read_bytes().splitlines()]  # fmt: skip
    assert len(rows) == 1000 and len({r["customer"] for r in rows}) == 77
    assert all(Decimal(str(r["total"])) == 2 * Decimal(str(r["price"])) for r in rows)


def test_errors_in_a_template_file_name_that_file_and_line(tmp_path: Path) -> None:
    shop = str(tmp_path / "templates" / "shop.yaml")
    for bad, where, says in (
        (SHOP.replace('"price * 2"', '"prices * 2"'), "12: streams.orders.fields.total.expr",
         "no field 'prices'"),
        (SHOP.replace("max: 50,", "max: 50, colour: red,"),
         "11: streams.orders.fields.price.uniform.colour", "unknown key"),
        (SHOP.replace("entity: customers", "entity: buyers"),
         "10: streams.orders.fields.customer.entity", "no entity 'buyers'"),
    ):  # fmt: skip
        with pytest.raises(ConfigError) as e:
            load_config(scenario(tmp_path, bad))
        assert f"{shop}:{where}: " in str(e.value) and says in str(e.value), str(e.value)
    # a problem with what the scenario gives over the file is the scenario's
    over = SCENARIO.replace("count: 77", "count: -1")
    with pytest.raises(ConfigError) as e:
        load_config(scenario(tmp_path, SHOP, over))
    assert f"{tmp_path / 'scenario.yaml'}:6: packs.template.params.entities.customers.count" in str(
        e.value
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("../outside.yaml", "outside the scenario file's folder"),
        ("/etc/passwd", "outside the scenario file's folder"),
        ("templates/none.yaml", "cannot read"),
        ("templates/list.yaml", "expected a mapping"),
        ("templates/broken.yaml", "not valid YAML"),
    ],
)
def test_a_params_file_is_read_only_beside_the_scenario(
    tmp_path: Path, name: str, says: str
) -> None:
    (tmp_path / "outside.yaml").write_text(SHOP)
    path = scenario(tmp_path / "s") if (tmp_path / "s").mkdir() is None else None
    assert path is not None
    (tmp_path / "s" / "templates" / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "s" / "templates" / "broken.yaml").write_text("streams: {orders: [\n")
    path.write_text(path.read_text().replace("templates/shop.yaml", name))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "packs.template.params_file" in str(e.value) and says in str(e.value), str(e.value)


def test_a_scenario_sent_as_text_names_no_files() -> None:
    with pytest.raises(ConfigError, match="read only for a scenario file"):
        parse_config(SCENARIO.replace("OUT", "/tmp/x"), source="api")


def test_tail_decodes_a_template_stream_given_its_scenario() -> None:
    from datafactory.encoders import build_encoder
    from datafactory.tail import by_fingerprint, render

    gen = pack().stream("orders")
    block = gen.generate(0, T0 + np.arange(3, dtype=np.int64))
    batch = build_encoder("avro", gen.schema, 4, single_object=True).encode(block)
    message = bytes(batch.record(1))
    assert b"unknown schema fingerprint" in render(message, by_fingerprint())
    got = orjson.loads(render(message, by_fingerprint([gen.schema])))
    want = block.to_records(4)[1]
    assert got["event_id"] == want["event_id"]
    assert got["ship"]["due"] == str(dt.date(1970, 1, 1) + dt.timedelta(days=want["ship"]["due"]))
