from __future__ import annotations

import numpy as np
import pytest

from datafactory.engine.sampling import AliasTable


def test_alias_table_reproduces_the_distribution() -> None:
    w = np.array([5.0, 0.0, 1.0, 3.0, 0.5, 0.5])
    counts = np.bincount(AliasTable(w).sample(np.random.default_rng(3), 600_000), minlength=6)
    expected = w / w.sum() * 600_000
    assert counts[1] == 0
    assert np.all(np.abs(counts - expected) <= 4 * np.sqrt(expected + 1))


def test_alias_table_rejects_bad_weights() -> None:
    for bad in ([], [0, 0], [1, -1], [1, np.nan]):
        with pytest.raises(ValueError):
            AliasTable(bad)


def test_compiled_alias_table_is_the_pure_loops_table() -> None:
    """The C builder repeats the pure loop step for step: the same table, so the same draws
    (and data) with or without a compiler."""
    from datafactory.engine import sampling

    native = sampling._native()
    if native is None:  # pragma: no cover - only where the extension is not built
        pytest.fail("the compiled extension is part of the install; build it (pip install -e .)")
    rng = np.random.default_rng(9)
    for k in (1, 2, 3, 17, 1000, 50_000):
        w = rng.lognormal(0, 2, k) * (rng.random(k) > 0.2)
        w[0] += 1.0
        table = sampling.AliasTable(w)
        scaled = np.ascontiguousarray(w * (k / w.sum()))
        prob, alias = np.ones(k), np.arange(k, dtype=np.int32)
        sampling._fill(scaled, prob, alias)
        assert np.array_equal(table.prob, prob) and np.array_equal(table.alias, alias)


def test_compiled_draws_are_numpys_draws() -> None:
    """``sample`` draws in C where the extension is built: the same entries as the numpy
    arithmetic for the same uniforms (edges included), so the same data either way."""
    from datafactory.engine import sampling

    native = sampling._native()
    if native is None:  # pragma: no cover - only where the extension is not built
        pytest.fail("the compiled extension is part of the install; build it (pip install -e .)")
    rng = np.random.default_rng(11)
    edges = np.array([0.0, 1e-300, 0.5, np.nextafter(1.0, 0.0)])
    for k in (1, 2, 3, 17, 1000, 50_000):
        w = rng.lognormal(0, 2, k) * (rng.random(k) > 0.2)
        w[0] += 1.0
        table = sampling.AliasTable(w)
        u = np.concatenate([edges, rng.random(20_000), (np.arange(k) + 0.5) / k])
        picked = np.empty(len(u), dtype=np.int32)
        native.alias_pick(u, table.prob, table.alias, picked)
        assert np.array_equal(picked, table.pick(u)), k
        # and sample() is the numpy draw of the same generator state
        a, b = np.random.default_rng(k), np.random.default_rng(k)
        assert np.array_equal(table.sample(a, 5000), table.pick(b.random(5000)))


def test_compiled_draws_refuse_what_is_not_a_uniform() -> None:
    from datafactory.engine import sampling

    native = sampling._native()
    assert native is not None
    table = sampling.AliasTable([1.0, 2.0, 3.0])
    for bad in (-0.1, np.nan, np.inf, 1e12):
        with pytest.raises(ValueError, match="alias_pick"):
            native.alias_pick(np.array([0.2, bad]), table.prob, table.alias, np.empty(2, np.int32))
    with pytest.raises(ValueError, match="lengths"):
        native.alias_pick(np.array([0.2]), table.prob, table.alias, np.empty(2, np.int32))


def test_draws_are_the_same_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    table = AliasTable(np.arange(1.0, 40.0))
    fast = table.sample(np.random.default_rng(5), 3000)
    monkeypatch.setenv("DATAFACTORY_FAST_PATH", "0")
    assert np.array_equal(table.sample(np.random.default_rng(5), 3000), fast)
