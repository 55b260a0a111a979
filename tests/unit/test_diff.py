"""The config diff: per component key, what a live run can take and what needs a restart."""

from __future__ import annotations

from datafactory.config import parse_config
from datafactory.runtime.diff import Changes, diff, edit

BASE = """
run: {name: d, seed: 1}
packs:
  retail:
    params: {stores: 5}
    streams:
      pos_transaction: {rate: {profile: constant, base: 100}}
      inventory_movement: {}
sinks:
  a: {type: stdout}
chaos:
  - {step: drop, rate: 0.1}
  - {step: duplicate, rate: 0.1}
"""


def test_an_identical_config_is_no_change() -> None:
    assert not diff(parse_config(BASE), parse_config(BASE))


def test_rates_streams_and_chaos_are_live_changes() -> None:
    new = (
        BASE.replace("base: 100", "base: 250")
        .replace("      inventory_movement: {}\n", "      customer_event: {}\n")
        .replace("{step: duplicate, rate: 0.1}", "{step: duplicate, rate: 0.3}")
        + "  - {step: hot_key, rate: 0.1}\n"
    )
    d = diff(parse_config(BASE), parse_config(new))
    assert d.streams == Changes(
        ("retail.customer_event",), ("retail.pos_transaction",), ("retail.inventory_movement",)
    )
    assert d.chaos == Changes(("hot_key",), ("duplicate",), ())
    assert not d.sinks and d.restart == ()


def test_what_cannot_change_live_is_named() -> None:
    new = (
        BASE.replace("stores: 5", "stores: 6")
        .replace("a: {type: stdout}", "a: {type: stdout, format: avro}")
        .replace("seed: 1", "seed: 2")
    )
    d = diff(parse_config(BASE), parse_config(new))
    assert d.restart == ("sinks", "packs.retail.params", "run")
    reordered = BASE.replace(
        "  - {step: drop, rate: 0.1}\n  - {step: duplicate, rate: 0.1}\n",
        "  - {step: duplicate, rate: 0.1}\n  - {step: drop, rate: 0.1}\n",
    )
    assert diff(parse_config(BASE), parse_config(reordered)).chaos.to_change == (
        "duplicate",
        "drop",
    )


def test_an_edit_keeps_references_and_lists_implicit_streams() -> None:
    text = """
run: {name: e, seed: 1}
packs: {retail: {}}
sinks: {a: {type: file, path: "${OUT_DIR:-data}/e"}}
"""
    cfg = parse_config(text)
    rate = {"profile": "constant", "base": 7.0}
    out = edit(text, {"packs": {"retail": {"streams": {"pos_transaction": {"rate": rate}}}}}, cfg)
    assert "${OUT_DIR:-data}/e" in out  # not the interpolated value
    new = parse_config(out)
    assert {p.event_type for p in new.streams} == {p.event_type for p in cfg.streams}
    d = diff(cfg, new)
    assert d.streams == Changes((), ("retail.pos_transaction",), ()) and not d.restart
