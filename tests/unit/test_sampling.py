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
