"""``datafactory infer``: a template drafted from records the retail pack wrote makes events
within the stated distances of them; each kind of value is drafted as what it is; JSON lines,
Avro and Parquet samples read alike; a bad sample is refused with a message."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from pathlib import Path

import fastavro
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from datafactory.config import parse_config
from datafactory.encoders import build_encoder
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.drive import uniform_times
from datafactory_retail import RetailPack, RetailParams
from datafactory_template import infer


def retail_sample(n: int) -> list[dict]:
    pack = RetailPack(RetailParams(), SeedTree(3))
    gen = pack.stream("pos_transaction")
    block = gen.generate(
        0, uniform_times(n, 1_767_787_200_000_000, 1_767_787_200_000_000 + n * 10**5)
    )
    payload = bytes(build_encoder("json", gen.schema, 3).encode(block).payload)
    return [orjson.loads(x) for x in payload.splitlines()]


def test_a_draft_of_retail_transactions_makes_events_close_to_them(tmp_path: Path) -> None:
    sample = retail_sample(5000)
    scenario, notes = infer.draft(sample, "pos")
    text = infer.to_yaml(scenario, notes)
    parse_config(text, source="draft.yaml")  # a valid scenario as it is
    assert yaml.safe_load(text) == scenario
    fields = scenario["packs"]["template"]["params"]["streams"]["pos"]["fields"]
    assert fields["transaction_id"]["gen"] == "sequence"
    assert fields["channel"]["gen"] == "choice" and fields["items"]["gen"] == "array"
    assert fields["total"]["decimals"] == 2 and fields["customer_id"]["null_rate"] > 0
    report = infer.compare(sample, infer.render(scenario, 5000))
    assert set(report) >= {"store_id", "channel", "items", "subtotal", "total"}
    far = {k: v for k, v in report.items() if not v["close"]}
    assert not far, far  # every field within KS <= 0.1 or overlap >= 0.9


def test_each_kind_of_value_is_drafted_as_what_it_is() -> None:
    rng = np.random.default_rng(4)
    t0 = 1_772_409_600
    sample = [
        {
            "event_time": f"2026-03-02T00:00:{i % 60:02d}Z",
            "flag": bool(rng.random() < 0.3),
            "size": int(rng.integers(1, 4)),
            "price": round(float(rng.lognormal(3, 0.4)), 2),
            "wait": float(rng.exponential(5.0)),
            "ref": str(uuid.UUID(int=int(rng.integers(0, 2**62)))),
            "code": f"AB-{rng.integers(0, 10**6):06d}",
            "shipped": f"2026-03-02T01:{i % 60:02d}:00Z",
            "note": None if i % 4 else "x",
        }
        for i in range(4000)
    ]
    del t0
    scenario, _ = infer.draft(sample, "things")
    f = scenario["packs"]["template"]["params"]["streams"]["things"]["fields"]
    assert f["flag"]["gen"] == "choice" and set(f["flag"]["values"]) == {True, False}
    assert f["size"]["gen"] == "choice" and sorted(f["size"]["values"]) == [1, 2, 3]
    assert f["price"]["gen"] == "lognormal" and f["price"]["decimals"] == 2
    assert abs(f["price"]["mu"] - 3) < 0.05 and abs(f["price"]["sigma"] - 0.4) < 0.05
    assert f["wait"]["gen"] == "exponential" and abs(f["wait"]["mean"] - 5) < 0.3
    assert f["ref"]["gen"] == "uuid"
    assert f["code"] == {"gen": "pattern", "pattern": "??-######"}
    assert f["shipped"]["gen"] == "time" and f["shipped"]["offset"][0] >= 3600 - 60
    assert f["note"]["null_rate"] == 0.75
    parse_config(infer.to_yaml(scenario, []))


def test_json_lines_avro_and_parquet_samples_read_alike(tmp_path: Path) -> None:
    records = [{"a": i, "b": f"x{i}", "c": i / 4} for i in range(100)]
    (tmp_path / "s.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    schema = {"type": "record", "name": "S",
              "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"},
                         {"name": "c", "type": "double"}]}  # fmt: skip
    with (tmp_path / "s.avro").open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), records)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "s.parquet")
    for name in ("s.jsonl", "s.avro", "s.parquet"):
        assert infer.read_sample(tmp_path / name) == records, name
    assert len(infer.read_sample(tmp_path / "s.jsonl", limit=7)) == 7


def test_the_command_drafts_reports_and_refuses_a_bad_sample(tmp_path: Path) -> None:
    sample = tmp_path / "pos.jsonl"
    sample.write_bytes(b"\n".join(orjson.dumps(r) for r in retail_sample(2000)) + b"\n")
    draft = tmp_path / "draft.yaml"
    run = [sys.executable, "-m", "datafactory", "infer"]
    r = subprocess.run([*run, str(sample), "--stream", "pos", "-o", str(draft), "--report"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "total" in r.stderr and "FAR" not in r.stderr, r.stderr
    parse_config(draft.read_text())
    shown = subprocess.run(
        [sys.executable, "-m", "datafactory", "sample", "template.pos", "--config", str(draft),
         "-n", "3"], capture_output=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    made = [orjson.loads(x) for x in shown.stdout.splitlines()]
    assert len(made) == 3 and {"store_id", "items", "total"} <= set(made[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    r = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot read the sample" in r.stderr
    assert "Traceback" not in r.stderr


def test_keys_and_references_between_samples_become_entities_and_refs() -> None:
    from datafactory_template import TemplatePack

    shop = """
run: {name: shop, seed: 8}
packs:
  template:
    params:
      entities:
        customers:
          count: 3000
          fields:
            customer_id: {gen: pattern, pattern: "C{seq:06d}"}
            segment: {gen: choice, values: [retail, business], weights: [9, 1]}
      streams:
        orders:
          fields:
            customer: {gen: ref, entity: customers, field: customer_id, pick: zipf, s: 1.1}
            segment: {gen: lookup, ref: customer, field: segment}
            amount: {gen: uniform, min: 1, max: 50, decimals: 2}
sinks: {out: {type: stdout}}
"""
    pk = TemplatePack(parse_config(shop).pack_params["template"], SeedTree(8))
    everyone = np.arange(3000, dtype=np.int64)
    ids = pk.world.values("customers", everyone, "customer_id").column
    segments = pk.world.values("customers", everyone, "segment").column.to_list()
    customers = [{"customer_id": i.decode(), "segment": s}
                 for i, s in zip(ids.tolist(), segments, strict=True)]  # fmt: skip
    gen = pk.stream("orders")
    block = gen.generate(0, 1_772_409_600_000_000 + np.arange(20_000, dtype=np.int64))
    orders = [orjson.loads(x) for x in bytes(
        build_encoder("json", gen.schema, 8).encode(block).payload).splitlines()]  # fmt: skip
    for i, o in enumerate(orders):  # lists and objects beside the references: not keys
        o["tags"] = ["a", "b"][: i % 3]
    scenario, notes = infer.draft_many({"customers": customers, "orders": orders})
    params = scenario["packs"]["template"]["params"]
    entity = params["entities"]["customers"]
    assert entity["count"] == 3000
    assert entity["fields"]["customer_id"] == {"gen": "pattern", "pattern": "C{seq:06d}"}
    ref = params["streams"]["orders"]["fields"]["customer"]
    assert ref == {"gen": "ref", "entity": "customers", "field": "customer_id", "pick": "zipf"}
    assert any("orders.customer refers to it" in n for n in notes), notes
    # a field that is the member's own: a lookup, so the draft keeps it consistent
    segment = params["streams"]["orders"]["fields"]["segment"]
    assert segment == {"gen": "lookup", "ref": "customer", "field": "segment"}
    assert params["streams"]["orders"]["fields"]["amount"]["gen"] != "lookup"
    parse_config(infer.to_yaml(scenario, notes))
    made = infer.render(scenario, 500, stream="orders")
    keys = {c["customer_id"] for c in customers}
    assert all(m["customer"] in keys for m in made)  # the draft's references resolve too


NESTED = """
run: {name: n, seed: 6}
packs:
  template:
    params:
      streams:
        orders:
          fields:
            ship:
              gen: object
              null_rate: 0.2
              fields:
                city: {gen: choice, values: [Oslo, Lima, Pune], weights: [5, 3, 2]}
                cost: {gen: uniform, min: 1, max: 30, decimals: 2}
                due: {gen: date, offset: [2, 9]}
                geo: {gen: object, fields: {lat: {gen: normal, mean: 10, sd: 4}}}
            born: {gen: date, offset: [-30000, -7000]}
            at: {gen: time, offset: [60, 600]}
sinks: {out: {type: stdout}}
"""


def test_nested_records_dates_and_avro_values_are_drafted_as_what_they_are(
    tmp_path: Path,
) -> None:
    """A sample of nested records with dates, decimals and times, as JSON lines and as an
    Avro container (dates, Decimals and datetimes as Python objects): the same draft, and
    what it makes is close to the sample in every nested field."""
    from datafactory_template import TemplatePack

    cfg = parse_config(NESTED)
    gen = TemplatePack(cfg.pack_params["template"], SeedTree(6)).stream("orders")
    block = gen.generate(0, 1_772_409_600_000_000 + np.arange(5000, dtype=np.int64) * 10**6)
    payload = bytes(build_encoder("json", gen.schema, 6).encode(block).payload)
    (tmp_path / "s.jsonl").write_bytes(payload)
    avro = build_encoder("avro", gen.schema, 6).encode(block)
    data = bytes(avro.payload)
    records = [fastavro.schemaless_reader(io.BytesIO(data[a:z]), gen.schema.parsed, None)
               for a, z in zip(avro.offsets[:-1], avro.offsets[1:], strict=True)]  # fmt: skip
    with (tmp_path / "s.avro").open("wb") as out:
        fastavro.writer(out, gen.schema.parsed, records)
    drafts = []
    for name in ("s.jsonl", "s.avro"):
        sample = infer.read_sample(tmp_path / name)
        scenario, _ = infer.draft(sample, "orders")
        parse_config(infer.to_yaml(scenario, []))
        f = scenario["packs"]["template"]["params"]["streams"]["orders"]["fields"]
        assert f["ship"]["gen"] == "object" and abs(f["ship"]["null_rate"] - 0.2) < 0.02
        ship = f["ship"]["fields"]
        assert ship["due"] == {"gen": "date", "offset": [2, 9]}, ship["due"]
        assert ship["cost"]["decimals"] == 2 and ship["geo"]["fields"]["lat"]["gen"] == "normal"
        assert f["born"]["gen"] == "date" and -30000 <= f["born"]["offset"][0] < -29000
        assert f["at"]["gen"] == "time" and 60 <= f["at"]["offset"][0] < 70
        report = infer.compare(sample, infer.render(scenario, 5000))
        assert {"ship.city", "ship.cost", "ship.geo.lat", "born"} <= set(report)
        far = {k: v for k, v in report.items() if not v["close"]}
        assert not far, (name, far)
        drafts.append(scenario)
    assert drafts[0] == drafts[1]  # JSON lines and Avro: the same draft
