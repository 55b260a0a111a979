"""The pieces a sharded run is seen through: shard parts, keys, merged snapshots."""

from __future__ import annotations

from datafactory.pack import SEQ_SHARD_BITS, Shard
from datafactory.runtime.host import one_result
from datafactory.runtime.shards import merge, per_shard, shard_key, split_key


def test_a_total_splits_into_parts_that_add_up() -> None:
    for total in (0, 1, 7, 1000, 999_999):
        for count in (1, 2, 3, 6, 7):
            parts = [Shard(i, count).split(total) for i in range(count)]
            assert sum(parts) == total and max(parts) - min(parts) <= 1


def test_each_shard_has_its_own_seq_space() -> None:
    assert Shard().seq_base == 0 and Shard(0, 4).seq_base == 0
    assert Shard(3, 4).seq_base == 3 << SEQ_SHARD_BITS


def test_shard_keys_round_trip_even_with_hashes_in_names() -> None:
    assert split_key(shard_key("retail.pos_transaction", 12)) == ("retail.pos_transaction", 12)
    assert split_key(shard_key("a#b", 0)) == ("a#b", 0)
    assert split_key("retail.pos_transaction") is None  # an unsharded run's key
    assert per_shard({"s#0": 5, "s#1": 7, "t#1": 2, "s": 9, "s#4": 1}, 2) == {
        0: {"s": 5}, 1: {"s": 7, "t": 2}
    }  # fmt: skip


def test_snapshots_merge_as_one_run() -> None:
    a = {
        "streams": {"s": {"released": 5, "rate": 2.0, "done": True}},
        "sinks": {"k": {"lag_seconds": 1.5, "holding_back": ["x"], "disk": None, "errors": 1}},
        "buffer": {"when_full": "block"},
    }
    b = {
        "streams": {"s": {"released": 7, "rate": 3.0, "done": False}, "t": {"released": 1}},
        "sinks": {"k": {"lag_seconds": 0.5, "holding_back": ["y", "x"], "disk": {"events": 3},
                        "errors": 2}},
        "buffer": {"when_full": "block"},
    }  # fmt: skip
    m = merge(merge({}, a), b)
    assert m["streams"]["s"] == {"released": 12, "rate": 5.0, "done": False}
    assert m["streams"]["t"] == {"released": 1}
    assert m["sinks"]["k"] == {
        "lag_seconds": 1.5, "holding_back": ["x", "y"], "disk": {"events": 3}, "errors": 3
    }  # fmt: skip
    assert m["buffer"] == {"when_full": "block"}


def test_a_reload_needs_a_restart_if_any_shard_says_so() -> None:
    ok = {"applied": ["rate:s"], "needs_restart": []}
    assert one_result([ok, ok]) == ok
    no = {"applied": [], "needs_restart": ["sinks"]}
    assert one_result([ok, no]) == {"applied": [], "needs_restart": ["sinks"]}
