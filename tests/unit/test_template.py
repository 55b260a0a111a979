"""The template pack: every generator kind recovers its parameters on 100,000 events, the same
seq is the same event however blocks are cut, the derived Avro schema decodes the Avro output,
and template errors name the file, line, stream and field."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import re
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest

from datafactory.config import ConfigError, parse_config
from datafactory.encoders import build_encoder
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.engine import Engine
from datafactory_template import TemplatePack
from datafactory_template.words import words
from tests.batch_cli import run_batch

N = 100_000
T0 = 1_772_409_600_000_000
FIELDS = """
            price: {gen: uniform, min: 5, max: 25, decimals: 2}
            score: {gen: normal, mean: 50, sd: 8}
            basket: {gen: lognormal, mu: 3.0, sigma: 0.5}
            wait_s: {gen: exponential, mean: 30}
            qty: {gen: uniform, min: 1, max: 5, integer: true}
            rank: {gen: zipf, n: 100, s: 1.2}
            status: {gen: choice, values: [placed, paid, shipped], weights: [5, 3, 2]}
            size: {gen: choice, values: [1, 2, 3]}
            coupon: {gen: pattern, pattern: "[A-Z]{6}", null_rate: 0.25}
            order_id: {gen: pattern, pattern: "ORD-{seq:08d}-?#"}
            line: {gen: sequence, start: 100, step: 2}
            ref: {gen: uuid}
            city: {gen: words, list: cities}
            shipped_at: {gen: time, offset: [3600, 7200]}
            channel: {gen: const, value: web}
            bounded: {gen: normal, mean: 0, sd: 10, min: -5, max: 5}
"""
CONFIG = f"""
run: {{name: tpl, seed: 11, clock: simulated, start: "2026-03-02T00:00:00Z", duration: 20s}}
packs:
  template:
    params:
      streams:
        orders:
          doc: An order in a web shop.
          fields:{FIELDS}
    streams:
      orders: {{rate: {{profile: constant, base: 50}}}}
sinks: {{out: {{type: file, path: OUT, format: json}}}}
telemetry: {{enabled: false}}
"""


def pack(seed: int = 11) -> TemplatePack:
    cfg = parse_config(CONFIG.replace("OUT", "/tmp/unused"))
    return TemplatePack(cfg.pack_params["template"], SeedTree(seed))


def block(n: int = N, first: int = 0, seed: int = 11) -> Any:
    times = T0 + np.arange(first, first + n, dtype=np.int64) * 1000
    return pack(seed).stream("orders").generate(first, times)


@pytest.fixture(scope="module")
def rows() -> dict[str, Any]:
    b = block()
    out: dict[str, Any] = {}
    for name, col in b.columns.items():
        values = np.asarray(col.to_list()) if hasattr(col, "to_list") else np.asarray(col)
        out[name] = values
    out["_nulls"] = b.nulls
    out["_time"] = b.event_time
    return out


def test_numbers_recover_their_parameters(rows: dict[str, Any]) -> None:
    price = rows["price"] / 100  # minor units, 2 decimals
    assert price.min() >= 5 and price.max() <= 25
    assert abs(price.mean() - 15) < 0.1 and abs(price.std() - 20 / math.sqrt(12)) < 0.1
    assert abs(rows["score"].mean() - 50) < 0.1 and abs(rows["score"].std() - 8) < 0.1
    logs = np.log(rows["basket"])
    assert abs(logs.mean() - 3.0) < 0.01 and abs(logs.std() - 0.5) < 0.01
    assert abs(rows["wait_s"].mean() - 30) < 0.5 and rows["wait_s"].min() >= 0
    qty = rows["qty"]
    assert qty.dtype.kind == "i" and set(qty.tolist()) == {1, 2, 3, 4, 5}
    bounded = rows["bounded"]
    assert bounded.min() == -5 and bounded.max() == 5
    share_clipped = ((bounded == -5) | (bounded == 5)).mean()
    assert abs(share_clipped - 0.617) < 0.01  # P(|N(0, 10)| > 5)


def test_zipf_and_choices_follow_their_weights(rows: dict[str, Any]) -> None:
    ranks = rows["rank"]
    weights = np.arange(1, 101, dtype=np.float64) ** -1.2
    expected = weights / weights.sum()
    got = np.bincount(ranks, minlength=101)[1:] / N
    assert ranks.min() >= 1 and ranks.max() <= 100
    assert np.abs(got[:5] - expected[:5]).max() < 0.005
    status = rows["status"]
    for value, share in (("placed", 0.5), ("paid", 0.3), ("shipped", 0.2)):
        assert abs((status == value).mean() - share) < 0.01, value
    assert set(rows["size"].tolist()) == {1, 2, 3}
    assert abs((rows["size"] == 2).mean() - 1 / 3) < 0.01


def test_text_ids_times_and_nulls(rows: dict[str, Any]) -> None:
    nulls = rows["_nulls"]["coupon"]
    assert abs(nulls.mean() - 0.25) < 0.01
    coupons = [c.decode() for c in rows["coupon"][~nulls][:1000]]
    assert all(re.fullmatch(r"[A-Z]{6}", c) for c in coupons)
    ids = [x.decode() for x in rows["order_id"][:1000]]
    assert ids[7].startswith("ORD-00000007-")
    assert all(re.fullmatch(r"ORD-\d{8}-[A-Z]\d", x) for x in ids)
    assert rows["line"][:3].tolist() == [100, 102, 104]
    refs = rows["ref"]
    assert len(set(refs.tolist())) == N and re.fullmatch(rb"[0-9a-f-]{36}", refs[0])
    assert set(rows["city"].tolist()) <= set(words("cities"))
    offset = rows["shipped_at"] - rows["_time"]
    assert offset.min() >= 3600 * 10**6 and offset.max() <= 7200 * 10**6
    assert set(rows["channel"].tolist()) == {"web"}


def test_the_same_seq_is_the_same_event_however_blocks_are_cut() -> None:
    schema = pack().stream("orders").schema
    enc = build_encoder("json", schema, 11)
    whole = bytes(enc.encode(block(3000)).payload)
    parts = b"".join(
        bytes(enc.encode(block(n, first)).payload)
        for first, n in ((0, 1000), (1000, 7), (1007, 1993))
    )
    assert whole == parts
    assert bytes(enc.encode(block(3000, seed=12)).payload) != whole  # another seed: other data


def test_the_derived_avro_schema_decodes_the_avro_output() -> None:
    gen = pack().stream("orders")
    b = block(500)
    enc = build_encoder("avro", gen.schema, 11)
    batch = enc.encode(b)
    payload = bytes(batch.payload)
    decoded = [
        fastavro.schemaless_reader(io.BytesIO(payload[a:z]), gen.schema.parsed)
        for a, z in zip(batch.offsets[:-1].tolist(), batch.offsets[1:].tolist(), strict=True)
    ]
    assert len(decoded) == 500
    first = decoded[0]
    assert set(first) == {f["name"] for f in gen.schema.fields}
    assert str(first["price"]) == f"{b.columns['price'][0] / 100:.2f}"
    assert [d["coupon"] is None for d in decoded] == b.nulls["coupon"].tolist()
    assert [d["line"] for d in decoded[:3]] == [100, 102, 104]


def test_a_template_stream_runs_through_the_engine(tmp_path: Path) -> None:
    cfg = parse_config(CONFIG.replace("OUT", str(tmp_path)))
    summary = asyncio.run(Engine(cfg).run())
    assert summary["streams"]["template.orders"]["released"] == 1000  # 50/s for 20 s
    lines = [
        orjson.loads(x)
        for f in sorted(tmp_path.rglob("*.jsonl"))
        for x in f.read_bytes().splitlines()
    ]
    assert len(lines) == 1000 and lines[0]["channel"] == "web"


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ("{gen: lognormal, mu: 1, sigma: -1}", "fields.bad.lognormal.sigma"),
        ("{gen: choice, values: [a, 1]}", "fields.bad.choice"),
        ("{gen: choice, values: [a, b], weights: [1]}", "fields.bad.choice"),
        ("{gen: pattern, pattern: '{foo}'}", "fields.bad.pattern"),
        ("{gen: words, list: nope}", "fields.bad.words"),
        ("{gen: uniform, min: 5, max: 1}", "fields.bad.uniform"),
        ("{gen: gaussian}", "fields.bad"),
    ],
)
def test_template_errors_name_the_file_line_stream_and_field(field: str, where: str) -> None:
    text = f"""run: {{name: t, seed: 1}}
packs:
  template:
    params:
      streams:
        orders:
          fields:
            ok: {{gen: uuid}}
            bad: {field}
sinks: {{out: {{type: stdout}}}}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, source="shop.yaml")
    message = str(e.value)
    assert "shop.yaml:9:" in message and f"streams.orders.{where}" in message, message


POS = """
run: {name: pos, seed: 5}
packs:
  template:
    params:
      streams:
        sale:
          fields:
            items:
              gen: array
              length: {min: 1, max: 5}
              items:
                sku: {gen: pattern, pattern: "SKU-#######"}
                qty: {gen: uniform, min: 1, max: 4, integer: true}
                price: {gen: uniform, min: 0.5, max: 60, decimals: 2}
                line_total: {gen: expr, expr: "qty * price", decimals: 2}
            tax: {gen: uniform, min: 0.05, max: 0.1, decimals: 3}
            subtotal: {gen: expr, expr: "sum(items.line_total)", decimals: 2}
            total: {gen: expr, expr: "round(subtotal * (1 + tax), 2)", decimals: 2}
            mean_price: {gen: expr, expr: "sum(items.price) / sum(items.qty)"}
sinks: {out: {type: stdout}}
"""


def test_arrays_and_derived_fields_are_exact_to_the_cent() -> None:
    from decimal import ROUND_HALF_UP, Decimal

    cfg = parse_config(POS)
    gen = TemplatePack(cfg.pack_params["template"], SeedTree(5)).stream("sale")
    b = gen.generate(0, T0 + np.arange(20_000, dtype=np.int64))
    lines = bytes(build_encoder("json", gen.schema, 5).encode(b).payload).splitlines()
    cent = Decimal("0.01")
    lengths = []
    for raw in lines:
        r = orjson.loads(raw)  # decimals as JSON numbers: exact through str -> Decimal
        sub = Decimal(0)
        for it in r["items"]:
            assert re.fullmatch(r"SKU-\d{7}", it["sku"]) and 1 <= it["qty"] <= 4
            line = (it["qty"] * Decimal(str(it["price"]))).quantize(cent, ROUND_HALF_UP)
            assert Decimal(str(it["line_total"])) == line
            sub += line
        lengths.append(len(r["items"]))
        assert Decimal(str(r["subtotal"])) == sub
        total = (sub * (1 + Decimal(str(r["tax"])))).quantize(cent, ROUND_HALF_UP)
        assert Decimal(str(r["total"])) == total, r
    assert set(lengths) == {1, 2, 3, 4, 5}
    # the Avro schema has the items as an array of records and decodes the output
    avro = build_encoder("avro", gen.schema, 5).encode(b.take(slice(0, 50)))
    first = fastavro.schemaless_reader(
        io.BytesIO(bytes(avro.payload)[: int(avro.offsets[1])]), gen.schema.parsed
    )
    assert str(first["total"]) == str(orjson.loads(lines[0])["total"])


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("nope * 2", "no field 'nope'"),
        ("items * 2", "is an array"),
        ("items.qty * 2", "per item"),
        ("sum(items.nope)", "no item field"),
        ("__import__('os').system('id')", "not allowed"),
        ("().__class__", "a dot names an object's number"),
        ("ship.cost * 2", "no number 'ship.cost'"),
        ("tax ** 99999999", "not allowed"),
        ("[x for x in 'ab']", "not allowed"),
        ("round(tax, 99)", "places"),
        ("sku", "no field 'sku'"),  # not a number: not something an expression can use
    ],
)
def test_expressions_are_checked_and_cannot_run_code(expr: str, says: str) -> None:
    text = POS.replace(
        'expr: "round(subtotal * (1 + tax), 2)"', f"expr: {orjson.dumps(expr).decode()}"
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text, source="pos.yaml")
    message = str(e.value)
    assert "streams.sale.fields.total.expr" in message and says in message, message
    assert "pos.yaml:19:" in message, message  # the line of `total`


SHOP = """
run: {name: shop, seed: 8}
packs:
  template:
    params:
      entities:
        customers:
          count: 5000
          fields:
            customer_id: {gen: pattern, pattern: "C{seq:06d}"}
            segment: {gen: choice, values: [retail, business], weights: [9, 1]}
            credit: {gen: uniform, min: 100, max: 1000, decimals: 2}
      streams:
        orders:
          fields:
            customer: {gen: ref, entity: customers, field: customer_id, pick: zipf, s: 1.1}
            segment: {gen: lookup, ref: customer, field: segment}
            amount: {gen: uniform, min: 1, max: 50, decimals: 2}
        visits:
          fields:
            who: {gen: ref, entity: customers, field: customer_id}
            credit: {gen: lookup, ref: who, field: credit}
sinks: {out: {type: stdout}}
"""


def test_references_always_resolve_and_agree_across_streams() -> None:
    cfg = parse_config(SHOP)
    pk = TemplatePack(cfg.pack_params["template"], SeedTree(8))
    orders = pk.stream("orders").generate(0, T0 + np.arange(50_000, dtype=np.int64))
    visits = pk.stream("visits").generate(0, T0 + np.arange(50_000, dtype=np.int64))
    # the population, member by member, as a stream that refers to it sees it
    members = pk.stream("orders").world
    everyone = np.arange(5000, dtype=np.int64)
    ids = members.values("customers", everyone, "customer_id").column
    segment = members.values("customers", everyone, "segment").column.to_list()
    credit = members.values("customers", everyone, "credit").column
    index = {x.decode(): i for i, x in enumerate(ids.tolist())}
    assert len(index) == 5000 and ids[42] == b"C000042"
    got = [x.decode() for x in orders.columns["customer"].tolist()]
    assert all(c in index for c in got)  # every reference resolves
    seg = orders.columns["segment"].to_list()
    assert all(seg[i] == segment[index[c]] for i, c in enumerate(got))  # the member's own
    who = [index[x.decode()] for x in visits.columns["who"].tolist()]
    assert (visits.columns["credit"] == credit[who]).all()
    # zipf: a few members get most orders; uniform: all about alike
    counts = np.sort(np.bincount([index[c] for c in got], minlength=5000))[::-1]
    assert counts[:50].sum() > 0.3 * len(got)
    flat = np.bincount(who, minlength=5000)
    assert flat.max() < 40 and (flat > 0).mean() > 0.99
    # the derived schema types a reference as the entity's field
    fields = {f["name"]: f["type"] for f in pk.stream("visits").schema.fields}
    assert fields["credit"]["logicalType"] == "decimal" and fields["who"] == "string"


BROKEN = {
    "customer.entity": (
        "entity: customers, field: customer_id",
        "entity: people, field: customer_id",
    ),
    "customer.field": ("field: customer_id, pick", "field: nope, pick"),
    "segment.ref": ("ref: customer, field: segment}", "ref: buyer, field: segment}"),
}


@pytest.mark.parametrize(
    ("where", "says"),
    [("customer.entity", "no entity"), ("customer.field", "has no field"),
     ("segment.ref", "no ref field")],
)  # fmt: skip
def test_reference_errors_name_the_field(where: str, says: str) -> None:
    old, new = BROKEN[where]
    with pytest.raises(ConfigError) as e:
        parse_config(SHOP.replace(old, new), source="shop.yaml")
    message = str(e.value)
    assert f"streams.orders.fields.{where}" in message and says in message, message
    line = 16 if where.startswith("customer") else 17  # the field's own line
    assert f"shop.yaml:{line}:" in message, message


MOVES = """
run: {name: moves, seed: 6, clock: simulated, start: "2026-03-02T00:00:00Z", duration: 10d}
packs:
  template:
    params:
      entities:
        accounts:
          count: 4000
          fields:
            account_id: {gen: pattern, pattern: "A{seq:07d}"}
          states:
            initial: {a: 3, b: 1}
            transitions:
              - {from: a, to: b, per_day: 1.0}
              - {from: a, to: c, per_day: 0.5}
              - {from: b, to: a, per_day: 2.0}
              - {from: c, to: a, per_day: 4.0}
      streams:
        changes:
          transitions: {entity: accounts}
          fields:
            account: {gen: member, field: account_id}
            note: {gen: choice, values: [auto, manual]}
sinks: {out: {type: file, path: OUT, format: json}}
telemetry: {enabled: false}
"""


def _moves(step_h: int, days: int = 10) -> list[tuple[int, str, str, str]]:
    cfg = parse_config(MOVES.replace("OUT", "/tmp/unused"))
    pk = TemplatePack(cfg.pack_params["template"], SeedTree(6))
    gen = pk.stream("changes")
    pk.begin(T0)
    out, seq, hour = [], 0, 3_600_000_000
    for k in range(1, days * 24 // step_h + 1):
        while (b := gen.poll(T0 + k * step_h * hour, seq, 5000)) is not None:
            seq += len(b)
            out += list(zip(b.event_time.tolist(), b.columns["account"].tolist(),
                            b.columns["from_state"].to_list(), b.columns["to_state"].to_list(),
                            strict=True))  # fmt: skip
    return out


def test_state_machine_moves_follow_their_rates_and_do_not_depend_on_polling() -> None:
    moves = _moves(1)
    seven = _moves(7)  # polled every 7 h up to 238 h: the same moves up to there
    assert seven == [m for m in moves if m[0] <= T0 + 238 * 3_600_000_000] and seven
    by_member: dict[bytes, list[tuple[int, str, str]]] = {}
    for t, who, a, b in moves:
        by_member.setdefault(who, []).append((t, a, b))
    for chain in by_member.values():  # each member's moves chain, in time order
        assert all(x[2] == y[1] and x[0] <= y[0] for x, y in itertools.pairwise(chain))
    from_a = [b for _, _, a, b in moves if a == "a"]
    assert abs(from_a.count("b") / len(from_a) - 2 / 3) < 0.02  # rate 1 vs 0.5 a day
    # time spent in a before leaving: exponential at 1.5 a day (stays that began in the
    # first 5 of the 10 days: all but 0.06 % of them ended in the window)
    waits = [
        (y[0] - x[0]) / 86_400e6
        for chain in by_member.values()
        for x, y in itertools.pairwise(chain)
        if x[2] == "a" and x[0] < T0 + 5 * 86_400_000_000
    ]
    assert abs(np.mean(waits) - 1 / 1.5) < 0.03, np.mean(waits)
    assert len(moves) > 20_000


def test_a_transitions_stream_runs_on_the_clock_through_the_engine(tmp_path: Path) -> None:
    cfg = parse_config(MOVES.replace("OUT", str(tmp_path)))
    summary = asyncio.run(Engine(cfg).run())
    released = summary["streams"]["template.changes"]["released"]
    rows = [orjson.loads(x) for f in sorted(tmp_path.rglob("*.jsonl"))
            for x in f.read_bytes().splitlines()]  # fmt: skip
    assert released == len(rows) > 20_000
    assert {r["from_state"] for r in rows} == {"a", "b", "c"}
    assert rows[0]["account"].startswith("A") and rows[0]["note"] in ("auto", "manual")
    times = [r["event_time"] for r in rows]
    assert times == sorted(times) and times[-1] < "2026-03-12"


def test_a_transitions_stream_needs_an_entity_with_states() -> None:
    text = MOVES.replace("          states:\n", "          unused:\n").replace("OUT", "/tmp/unused")
    with pytest.raises(ConfigError):
        parse_config(text)
    no_states = MOVES.replace("transitions: {entity: accounts}", "transitions: {entity: users}")
    with pytest.raises(ConfigError) as e:
        parse_config(no_states.replace("OUT", "/tmp/unused"), source="m.yaml")
    assert "streams.changes.transitions.entity" in str(e.value) and "m.yaml:20:" in str(e.value)


LEDGER = """
run: {name: ledger, seed: 2}
packs:
  template:
    params:
      entities:
        accounts:
          count: 500
          fields:
            account_id: {gen: pattern, pattern: "ACC{seq:06d}"}
            opening: {gen: lognormal, mu: 4, sigma: 1, decimals: 2}
          balance: {opening: opening, decimals: 2}
      streams:
        payments:
          fields:
            account_id: {gen: ref, entity: accounts, field: account_id}
            sign: {gen: choice, values: [-1, 1], weights: [7, 3]}
            amount: {gen: lognormal, mu: 3, sigma: 1, min: 0.01, decimals: 2}
            delta: {gen: expr, expr: "sign * amount", decimals: 2}
            balance_after: {gen: posting, ref: account_id, amount: delta}
            declined: {gen: declined, posting: balance_after}
sinks: {out: {type: stdout}}
"""


def _ledger_rows(cuts: list[int]) -> list[dict]:
    cfg = parse_config(LEDGER)
    gen = TemplatePack(cfg.pack_params["template"], SeedTree(2)).stream("payments")
    enc = build_encoder("json", gen.schema, 2)
    rows, first = [], 0
    for n in cuts:
        b = gen.generate(first, T0 + np.arange(first, first + n, dtype=np.int64))
        rows += [orjson.loads(x) for x in bytes(enc.encode(b).payload).splitlines()]
        first += n
    return rows


def test_balances_never_go_negative_and_postings_are_exact() -> None:
    from decimal import Decimal

    rows = _ledger_rows([20_000])
    assert rows == _ledger_rows([7, 9_993, 3_000, 7_000])  # however the blocks are cut
    balance: dict[str, Decimal] = {}
    declined = 0
    for r in rows:
        after, delta = Decimal(str(r["balance_after"])), Decimal(str(r["delta"]))
        assert after >= 0
        before = balance.get(r["account_id"])
        if before is not None:
            if r["declined"]:
                declined += 1
                assert before + delta < 0 and after == before
            else:
                assert after == before + delta
        balance[r["account_id"]] = after
    assert 0.05 < declined / len(rows) < 0.9  # debits outweigh credits: some are declined


def test_one_stream_posts_to_an_entity_and_postings_are_checked() -> None:
    two = LEDGER.replace(
        "sinks:",
        "        refunds:\n          fields:\n"
        "            account_id: {gen: ref, entity: accounts, field: account_id}\n"
        "            amount: {gen: uniform, min: 1, max: 5, decimals: 2}\n"
        "            balance_after: {gen: posting, ref: account_id, amount: amount}\n"
        "sinks:",
    )
    with pytest.raises(ConfigError) as e:
        parse_config(two)
    assert "one stream posts" in str(e.value)
    wrong = LEDGER.replace("amount: delta}", "amount: sign}")
    with pytest.raises(ConfigError) as e:
        parse_config(wrong)
    assert "balance_after.amount" in str(e.value) and "2 decimals" in str(e.value)


def test_a_template_with_balances_and_moves_makes_history_in_batch_mode(tmp_path: Path) -> None:

    import pyarrow.dataset as ds

    cfg = tmp_path / "ledger.yaml"
    cfg.write_text(
        LEDGER.replace("sinks: {out: {type: stdout}}", "sinks: {out: {type: stdout}}\n")
        .replace(
            "          balance: {opening: opening, decimals: 2}",
            "          balance: {opening: opening, decimals: 2}\n"
            "          states:\n            initial: open\n            transitions:\n"
            "              - {from: open, to: frozen, per_day: 2}\n"
            "              - {from: frozen, to: open, per_day: 4}",
        )
        .replace(
            "sinks:",
            "        status:\n          transitions: {entity: accounts}\n          fields:\n"
            "            account_id: {gen: member, field: account_id}\n"
            "    streams:\n      payments: {rate: {profile: constant, base: 2}}\n"
            "      status: {}\nsinks:",
        )
    )
    lake = run_batch(cfg, tmp_path / "lake", "2026-03-02", "2026-03-02")
    pay = ds.dataset(lake / "stream=template.payments", format="parquet").to_table()
    moves = ds.dataset(lake / "stream=template.status", format="parquet").to_table()
    assert pay.num_rows == 2 * 86_400 and moves.num_rows > 500  # 500 members, ~2.7 moves a day
    assert min(float(x) for x in pay.column("balance_after").to_pylist()) >= 0


def test_expressions_may_use_a_referenced_members_numbers() -> None:
    text = SHOP.replace(
        "            amount: {gen: uniform, min: 1, max: 50, decimals: 2}",
        "            amount: {gen: uniform, min: 1, max: 50, decimals: 2}\n"
        "            credit: {gen: lookup, ref: customer, field: credit}\n"
        '            headroom: {gen: expr, expr: "credit - amount", decimals: 2}',
    )
    cfg = parse_config(text)
    b = (
        TemplatePack(cfg.pack_params["template"], SeedTree(8))
        .stream("orders")
        .generate(0, T0 + np.arange(2000, dtype=np.int64))
    )
    cols = b.columns
    assert (cols["headroom"] == cols["credit"] - cols["amount"]).all()  # minor units, exact
    not_a_number = text.replace('"credit - amount"', '"segment * 2"')
    with pytest.raises(ConfigError) as e:
        parse_config(not_a_number, source="shop.yaml")
    assert "orders.fields.headroom.expr" in str(e.value) and "no field 'segment'" in str(e.value)


OWN = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["placed", "paid"]}},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9,
                                    "scale": 2}},
        {"name": "coupon", "type": ["null", "string"]},
    ],
}  # fmt: skip
OWN_TEMPLATE = """
run: {name: own, seed: 1}
packs:
  template:
    params:
      streams:
        orders:
          avsc: AVSC
          fields:
            status: {gen: choice, values: [placed, paid]}
            amount: {gen: uniform, min: 1, max: 9, decimals: 2}
            coupon: {gen: pattern, pattern: "[A-Z]{5}", null_rate: 0.5}
sinks: {out: {type: stdout}}
"""


def test_a_users_own_avsc_is_checked_against_the_template(tmp_path: Path) -> None:
    from datafactory.config import load_config

    inline = OWN_TEMPLATE.replace("AVSC", orjson.dumps(OWN).decode())
    parse_config(inline)  # matches: no error
    wrong = dict(OWN, fields=[*OWN["fields"][:3], {"name": "amount", "type": "double"}])
    with pytest.raises(ConfigError) as e:
        parse_config(OWN_TEMPLATE.replace("AVSC", orjson.dumps(wrong).decode()), source="o.yaml")
    message = str(e.value)
    assert "streams.orders.avsc" in message and "amount: yours is" in message, message
    assert "coupon: made by the template, not in your schema" in message
    # a file beside the scenario file; nothing outside its folder; no file from a text config
    (tmp_path / "orders.avsc").write_bytes(orjson.dumps(OWN))
    scenario = tmp_path / "shop.yaml"
    scenario.write_text(OWN_TEMPLATE.replace("AVSC", "orders.avsc"))
    load_config(scenario)
    scenario.write_text(OWN_TEMPLATE.replace("AVSC", "../../etc/passwd"))
    with pytest.raises(ConfigError) as e:
        load_config(scenario)
    assert "outside the scenario file's folder" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(OWN_TEMPLATE.replace("AVSC", str(tmp_path / "orders.avsc")))
    assert "read only for a scenario file" in str(e.value)


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("{gen: uniform, min: 0, max: .inf}", "finite"),
        ("{gen: normal, mean: .nan, sd: 1}", "finite"),
        ("{gen: sequence, start: 99999999999999999999}", "beyond"),
        ("{gen: const, value: 1.0e+300}", "beyond"),
        ("{gen: choice, values: [1, 1.0e+20]}", "beyond"),
        ("{gen: array, length: {max: 5000}, items: {a: {gen: uuid}}}", "less than or equal"),
    ],
)
def test_numbers_a_template_gives_are_bounded(field: str, says: str) -> None:
    text = f"""run: {{name: t, seed: 1}}
packs:
  template:
    params:
      streams:
        s:
          fields:
            bad: {field}
sinks: {{out: {{type: stdout}}}}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, source="b.yaml")
    assert "b.yaml:8:" in str(e.value) and says in str(e.value), str(e.value)


def test_a_huge_zipf_population_needs_no_table() -> None:
    from datafactory_template.fields import Context, Draws, Zipf

    seq = np.arange(200_000, dtype=np.int64)
    ranks = Zipf(gen="zipf", n=10_000_000, s=1.2).values(Draws(seq, 7), Context(seq, seq, 1, "s"))
    assert ranks.min() == 1 and ranks.max() <= 10_000_000
    # rank 1 as often as the continuous power law on [1, n + 1) puts below 2 (s = 1.2: 13.5 %)
    expected = (2**-0.2 - 1) / (10_000_001**-0.2 - 1)
    assert abs((ranks == 1).mean() - expected) < 0.005


CHAOS = """
run: {name: tplchaos, seed: 4, clock: simulated, start: "2026-03-02T00:00:00Z", duration: 10m}
packs:
  template:
    params:
      streams:
        orders:
          fields:
            order_id: {gen: pattern, pattern: "ORD-{seq:08d}"}
            status: {gen: choice, values: [placed, paid, shipped]}
            amount: {gen: lognormal, mu: 3, sigma: 0.5, decimals: 2}
            items:
              gen: array
              length: {min: 1, max: 3}
              items: {qty: {gen: uniform, min: 1, max: 5, integer: true}}
            ship:
              gen: object
              null_rate: 0.1
              fields:
                city: {gen: words, list: cities}
                due: {gen: date, offset: [1, 3]}
            placed_on: {gen: date}
    streams:
      orders: {rate: {profile: constant, base: 50}}
sinks:
  files: {type: file, path: OUT/data, format: json}
chaos:
  - {step: drop, rate: 0.01}
  - {step: duplicate, rate: 0.01}
  - {step: corrupt_bytes, rate: 0.01}
  - {step: schema_drift, rate: 0.01}
  - {step: corrupt_value, rate: 0.01}
manifest:
  sink: {type: file, path: OUT/truth}
telemetry: {enabled: false}
"""


def test_chaos_and_verify_work_on_a_template_stream(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "chaos.yaml"
    cfg.write_text(CHAOS.replace("OUT", str(tmp_path)))
    cli = [sys.executable, "-m", "datafactory"]
    run = subprocess.run([*cli, "run", str(cfg)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    ok = subprocess.run([*cli, "verify", str(cfg), "--json"], capture_output=True, text=True,
                        timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    report = orjson.loads(ok.stdout)
    t = report["sinks"]["files"]["template.orders"]
    assert t["released"] == 30_000 and t["missing"] == 0 and t["unidentified"] == 0
    kinds = {k.split(".")[0] for k in report["chaos"]}
    assert kinds >= {"drop", "duplicate", "corrupt_bytes", "schema_drift", "corrupt_value"}
