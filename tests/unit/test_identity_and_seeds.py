"""Event ids and the seed tree."""

from __future__ import annotations

import uuid

import numpy as np

from datafactory.engine.identity import event_id, event_ids, event_ids_numpy
from datafactory.engine.seeding import SeedTree
from datafactory.runtime.drive import uniform_times
from datafactory_retail import RetailPack, RetailParams


def test_event_ids_are_uuids_v8_unique_and_reproducible() -> None:
    seq = np.arange(200_000, dtype=np.int64)
    ids = event_ids(42, "retail.pos_transaction", seq)
    assert len(set(ids.tolist())) == len(seq)
    for raw in ids[[0, 1, 99_999]].tolist():
        u = uuid.UUID(raw.decode())
        assert u.version == 8
        assert u.variant == uuid.RFC_4122
    again = event_ids(42, "retail.pos_transaction", seq)
    assert np.array_equal(ids, again)
    assert event_id(42, "retail.pos_transaction", 99_999) == ids[99_999].decode()


def test_compiled_and_numpy_event_ids_are_the_same() -> None:
    from datafactory.encoders import fast

    assert fast.available()  # the compiled path is part of every supported build
    rng = np.random.default_rng(5)
    for seq in (
        np.arange(5_000, dtype=np.int64),
        rng.integers(-(2**63), 2**63 - 1, 20_000, dtype=np.int64),
        np.array([0, 2**63 - 1, -(2**63), -1], dtype=np.int64),
        np.arange(1, 12_000, 7, dtype=np.int64)[::3],  # not contiguous
    ):
        ids = event_ids(11, "retail.pos_transaction", seq)
        assert ids.dtype == np.dtype("S36") and len(ids) == len(seq)
        assert (ids == event_ids_numpy(11, "retail.pos_transaction", seq)).all()
    assert len(event_ids(11, "a.b", np.empty(0, dtype=np.int64))) == 0


def test_event_ids_depend_on_seed_and_stream() -> None:
    seq = np.arange(1000, dtype=np.int64)
    a = event_ids(1, "retail.pos_transaction", seq)
    assert not np.intersect1d(a, event_ids(2, "retail.pos_transaction", seq)).size
    assert not np.intersect1d(a, event_ids(1, "retail.return", seq)).size


def test_seed_children_are_addressed_by_name_not_order() -> None:
    a = SeedTree(7)
    x1 = a.rng("retail", "pos_transaction").random(5)
    b = SeedTree(7)
    b.rng("retail", "inventory_movement").random(1000)  # another stream drawn first
    x2 = b.rng("retail", "pos_transaction").random(5)
    assert np.array_equal(x1, x2)
    assert not np.array_equal(x1, SeedTree(8).rng("retail", "pos_transaction").random(5))


def _pos(seed: int, n: int = 2000) -> list[dict[str, object]]:
    pack = RetailPack(RetailParams(), SeedTree(seed))
    block = pack.stream("pos_transaction").generate(0, uniform_times(n, 0, 10**9))
    return block.to_records(seed)


def test_same_seed_same_data_other_seed_other_data() -> None:
    assert _pos(3) == _pos(3)
    assert _pos(3) != _pos(4)


def test_block_take_by_slice_and_index_agree() -> None:
    pack = RetailPack(RetailParams(), SeedTree(1))
    block = pack.stream("pos_transaction").generate(100, uniform_times(500, 0, 10**9))
    idx = np.arange(37, 211)
    a = block.take(slice(37, 211)).to_records(1)
    b = block.take(idx).to_records(1)
    full = block.to_records(1)
    assert a == b == full[37:211]
    picked = block.take(np.array([5, 3, 400])).to_records(1)
    assert picked == [full[5], full[3], full[400]]
