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
