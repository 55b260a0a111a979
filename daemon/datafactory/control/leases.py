"""Shard leases on the ledger: which daemon runs each shard of a sharded stream run.

One row per (run, shard): an owner, an expiry on the ledger's clock, an *epoch* and a state
(``open`` until the shard ends, then ``done``). A daemon takes a shard that nobody holds, or
whose lease expired, with one conditional UPDATE on the row it read (``WHERE epoch = <the
epoch it saw>``): the database's row lock decides, so two daemons can never both take it,
and every take-over raises the epoch. A holder renews its lease in the same transaction as
its checkpoint (:meth:`Ledger.checkpoint` with :func:`renewal` as its fence): a daemon that
lost a shard (it stalled past the expiry and another took it) moves no mark and learns it at
once (:class:`~datafactory.control.ledger.Fenced`). No consensus of our own: PostgreSQL's row
locks (or SQLite's write lock, for daemons sharing one file) are the only arbiter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datafactory.control.ledger import Ledger

OPEN, DONE = "open", "done"
Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Lease:
    run_id: str
    shard: int
    owner: str
    epoch: int


@dataclass(frozen=True)
class ShardRow:
    shard: int
    owner: str
    expires: float
    epoch: int
    state: str


async def open_shards(ledger: Ledger, run_id: str, count: int) -> None:
    """A sharded run's lease rows (again: a no-op)."""
    for shard in range(count):
        await ledger._update(
            "INSERT INTO shard_leases (run_id, shard) VALUES (?, ?) "
            "ON CONFLICT (run_id, shard) DO NOTHING",
            (run_id, shard),
        )


async def shards(ledger: Ledger, run_id: str) -> list[ShardRow]:
    rows = await ledger._fetch(
        "SELECT shard, owner, expires, epoch, state FROM shard_leases WHERE run_id = ? "
        "ORDER BY shard",
        (run_id,),
    )
    return [ShardRow(int(r[0]), r[1], float(r[2]), int(r[3]), r[4]) for r in rows]


async def claim(
    ledger: Ledger, run_id: str, owner: str, ttl: float, most: int | None = None
) -> list[Lease]:
    """Take up to ``most`` open shards nobody holds (or whose lease expired): the leases won."""
    now = await ledger.now()
    won: list[Lease] = []
    for row in await shards(ledger, run_id):
        if most is not None and len(won) >= most:
            break
        if row.state != OPEN or (row.owner and row.expires >= now):
            continue
        changed = await ledger._update(
            "UPDATE shard_leases SET owner = ?, expires = ?, epoch = epoch + 1 "
            "WHERE run_id = ? AND shard = ? AND epoch = ? AND state = ?",
            (owner, now + ttl, run_id, row.shard, row.epoch, OPEN),
        )
        if changed == 1:  # else another daemon took it between the read and the update
            won.append(Lease(run_id, row.shard, owner, row.epoch + 1))
    return won


def renewal(lease: Lease, expires: float) -> Statement:
    """The statement that renews ``lease`` to ``expires``: it changes one row only while the
    lease is still ours (a checkpoint's fence)."""
    return (
        "UPDATE shard_leases SET expires = ? "
        "WHERE run_id = ? AND shard = ? AND owner = ? AND epoch = ? AND state = ?",
        (expires, lease.run_id, lease.shard, lease.owner, lease.epoch, OPEN),
    )


def lease_fence(lease: Lease) -> Statement:
    """Changes one row while ``lease`` is still held, and nothing about it (a fence for a
    write that must not renew: a shard's journal)."""
    return (
        "UPDATE shard_leases SET epoch = epoch "
        "WHERE run_id = ? AND shard = ? AND owner = ? AND epoch = ? AND state = ?",
        (lease.run_id, lease.shard, lease.owner, lease.epoch, OPEN),
    )


async def renew(ledger: Ledger, lease: Lease, ttl: float) -> bool:
    """Renew on its own (without a checkpoint); False: the lease is lost."""
    sql, args = renewal(lease, await ledger.now() + ttl)
    return await ledger._update(sql, args) == 1


async def release(ledger: Ledger, lease: Lease, done: bool = False) -> bool:
    """Give the shard back (``done``: it ended; nobody takes it again). False: it was not
    ours any more."""
    return (
        await ledger._update(
            "UPDATE shard_leases SET owner = '', expires = 0, state = ? "
            "WHERE run_id = ? AND shard = ? AND owner = ? AND epoch = ?",
            (DONE if done else OPEN, lease.run_id, lease.shard, lease.owner, lease.epoch),
        )
        == 1
    )


async def heartbeat(ledger: Ledger, owner: str, ttl: float) -> list[str]:
    """``owner`` is alive now; the daemons alive within ``ttl`` (itself included)."""
    now = await ledger.now()
    await ledger._update(
        "INSERT INTO daemons (owner, seen) VALUES (?, ?) "
        "ON CONFLICT (owner) DO UPDATE SET seen = excluded.seen",
        (owner, now),
    )
    rows = await ledger._fetch("SELECT owner FROM daemons WHERE seen >= ?", (now - ttl,))
    return sorted({r[0] for r in rows} | {owner})
