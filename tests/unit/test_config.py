"""Config validation: every problem is reported with file, line, key path and expectation."""

from __future__ import annotations

import textwrap

import pytest

from datafactory.config import ConfigError, load_config, parse_config
from datafactory.engine.rate import ConstantProfile, WeeklyProfile

GOOD = """
run: {name: t, seed: 3}
packs:
  retail:
    params: {stores: 5}
    streams:
      pos_transaction: {rate: {profile: constant, base: 100}}
sinks:
  out: {type: file, path: /tmp/x, format: json}
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(textwrap.dedent(text), "scenario.yaml")
    return str(e.value)


def test_good_config_resolves() -> None:
    cfg = parse_config(GOOD, "g.yaml")
    (s,) = cfg.streams
    assert s.event_type == "retail.pos_transaction"
    assert s.sinks == ("out",)
    assert s.rate == ConstantProfile(base=100)
    assert cfg.pack_params["retail"].stores == 5  # type: ignore[attr-defined]


def test_default_streams_and_rates_come_from_the_pack() -> None:
    cfg = parse_config("packs: {retail: {}}\nsinks: {o: {type: stdout}}\n")
    s, *driven = cfg.streams
    assert [d.stream for d in driven] == [
        "inventory_movement",
        "return",
        "price_change",
        "customer_event",
        "store",
    ]
    assert all(d.driven for d in driven)
    from datafactory_retail import DEFAULT_RATE

    assert isinstance(s.rate, WeeklyProfile) and s.rate == DEFAULT_RATE


def test_unknown_key_is_named_with_its_line() -> None:
    msg = problems(GOOD.replace("seed: 3}", "seed: 3, sede: 4}"))
    assert "scenario.yaml:2: run.sede: unknown key" in msg


def test_wrong_type_and_negative_rate() -> None:
    msg = problems(GOOD.replace("seed: 3", "seed: many").replace("base: 100", "base: -1"))
    assert "run.seed: Input should be a valid integer" in msg and "'many'" in msg
    assert "packs.retail.streams.pos_transaction.rate.base" in msg
    assert "greater than or equal to 0" in msg


def test_bad_pack_param_and_sink_setting() -> None:
    msg = problems(GOOD.replace("stores: 5", "stores: 0").replace("format: json", "format: xml"))
    assert "scenario.yaml:5: packs.retail.params.stores" in msg
    assert "sinks.out.format" in msg and "'xml'" in msg


def test_unknown_names() -> None:
    msg = problems(GOOD.replace("type: file", "type: ftp"))
    assert "sinks.out.type: unknown sink type 'ftp'" in msg
    msg = problems(GOOD.replace("retail:", "wholesale:"))
    assert "unknown pack 'wholesale'" in msg
    msg = problems(GOOD.replace("pos_transaction:", "pos:"))
    assert "packs.retail.streams.pos: pack 'retail' has no stream 'pos'" in msg
    bad_route = GOOD.replace("base: 100}}", "base: 100}, sinks: [nowhere]}")
    assert "no sink named 'nowhere'" in problems(bad_route)


def test_rate_profile_errors_name_the_profile_field() -> None:
    msg = problems(GOOD.replace("{profile: constant, base: 100}", "{profile: diurnal, base: 1}"))
    assert "rate.amplitude: Field required" in msg
    msg = problems(GOOD.replace("profile: constant", "profile: zigzag"))
    assert "rate" in msg and "zigzag" in msg


def test_simulated_clock_needs_an_end() -> None:
    msg = problems(GOOD.replace("seed: 3}", "seed: 3, clock: simulated}"))
    assert "run.duration" in msg


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DF_OUT", "/tmp/from-env")
    cfg = parse_config(
        GOOD.replace("/tmp/x", "'${DF_OUT}/a$$b'").replace("seed: 3", "seed: '${DF_SEED:-9}'")
    )
    assert cfg.sinks["out"].path == "/tmp/from-env/a$b"  # type: ignore[attr-defined]
    assert cfg.run.seed == 9
    msg = problems(GOOD.replace("/tmp/x", "'${DF_MISSING}'"))
    assert "sinks.out.path: environment variable DF_MISSING is not set" in msg


def test_all_problems_are_reported_at_once() -> None:
    msg = problems(GOOD.replace("stores: 5", "stores: -5").replace("type: file", "type: nope"))
    assert "packs.retail.params.stores" in msg and "sinks.out.type" in msg


def test_yaml_syntax_and_missing_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert "not valid YAML" in problems("run: [unclosed\n")
    assert "expected a mapping" in problems("- just\n- a list\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "absent.yaml")
    assert "cannot read" in str(e.value)


def test_shipped_configs_are_valid() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "config"
    files = [root / "default.yaml", *sorted((root / "examples").glob("*.yaml"))]
    assert len(files) >= 3
    for f in files:
        load_config(f)
