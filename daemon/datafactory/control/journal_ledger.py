"""A shard's journal kept in the shared ledger, so whichever daemon takes the shard over replays
it (:mod:`datafactory.runtime.journal`; a folder serves a daemon's own runs).

Commands are one row each (``journal_commands``: run, shard, part, number, the JSON line),
snapshots one row each (``journal_snapshots``: the sealed state and its streams' seqs). What
the engine records is buffered and written by :meth:`LedgerStore.durable`, which the engine
awaits before it releases a slice: one transaction writes everything recorded since the last
(a group commit: streams waiting meanwhile share it), so no event goes out before the commands
that made it are in the ledger. With a lease, that transaction is fenced by it: a daemon that
lost the shard writes nothing more to its journal (:class:`~datafactory.control.ledger.Fenced`).

Reads happen once, before the engine is built (:meth:`LedgerStore.load`): the replay itself
is synchronous, from what was loaded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import orjson

from datafactory.control.leases import Lease, Statement, lease_fence
from datafactory.control.ledger import Ledger
from datafactory.runtime.journal import Store, _seqs_of


class LedgerStore(Store):
    """One shard's journal in the ledger (see the module's docstring)."""

    def __init__(self, ledger: Ledger, run_id: str, shard: int, lease: Lease | None = None):
        self.ledger = ledger
        self.run_id = run_id
        self.shard = shard
        self.lease = lease
        self._commands: dict[int, list[bytes]] = {}  # as loaded
        self._snapshots: dict[int, tuple[bytes, dict[str, int]]] = {}
        self._count: dict[int, int] = {}  # commands per part (loaded and appended)
        self._part = 0
        self._pending: list[Statement] = []
        self._appended = 0  # statements queued, ever
        self._written = 0  # of which in the ledger
        self._mutex = threading.Lock()  # appends come from worker threads
        self._writing = asyncio.Lock()

    async def load(self) -> None:
        """What the ledger holds of this shard's journal (before a replay)."""
        rows = await self.ledger._fetch(
            "SELECT part, n, line FROM journal_commands WHERE run_id = ? AND shard = ? "
            "ORDER BY part, n",
            (self.run_id, self.shard),
        )
        self._commands = {}
        for part, _, line in rows:
            self._commands.setdefault(int(part), []).append(
                line.encode() if isinstance(line, str) else bytes(line)
            )
        self._count = {k: len(v) for k, v in self._commands.items()}
        snaps = await self.ledger._fetch(
            "SELECT part, data, seqs FROM journal_snapshots WHERE run_id = ? AND shard = ?",
            (self.run_id, self.shard),
        )
        self._snapshots = {
            int(part): (bytes(data), _seqs_of(seqs.encode(), f"snapshot {part} of the ledger"))
            for part, data, seqs in snaps
        }

    # -- reads (from what was loaded, and written since) --------------------------------------

    def parts(self) -> list[int]:
        return sorted(set(self._count) | set(self._snapshots))

    def commands(self, n: int) -> Iterator[dict[str, Any]]:
        for line in self._commands.get(n, []):
            yield orjson.loads(line)

    def snapshot(self, n: int) -> tuple[bytes, dict[str, int]] | None:
        return self._snapshots.get(n)

    def snapshot_seqs(self, n: int) -> dict[str, int] | None:
        found = self._snapshots.get(n)
        return found[1] if found is not None else None

    # -- writes ----------------------------------------------------------------------------

    def start_part(self, n: int) -> None:
        with self._mutex:
            self._part = n
            self._count.setdefault(n, 0)

    def append(self, line: bytes) -> None:
        with self._mutex:
            n = self._count.get(self._part, 0)
            self._count[self._part] = n + 1
            self._queue(
                "INSERT INTO journal_commands (run_id, shard, part, n, line) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.run_id, self.shard, self._part, n, line.decode()),
            )

    def save_snapshot(self, n: int, data: bytes, seqs: dict[str, int]) -> None:
        with self._mutex:
            self._queue(
                "INSERT INTO journal_snapshots (run_id, shard, part, data, seqs) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, shard, part) DO UPDATE SET "
                "data = excluded.data, seqs = excluded.seqs",
                (self.run_id, self.shard, n, data, orjson.dumps(seqs).decode()),
            )
            # usable once written: a restart before that uses an older one (it is queued
            # behind every command before it, and written with them or after)
            self._snapshots[n] = (data, seqs)

    def drop_before(self, n: int) -> None:
        with self._mutex:
            for table in ("journal_commands", "journal_snapshots"):
                self._queue(
                    f"DELETE FROM {table} WHERE run_id = ? AND shard = ? AND part < ?",
                    (self.run_id, self.shard, n),
                )
            self._commands = {k: v for k, v in self._commands.items() if k >= n}
            self._count = {k: v for k, v in self._count.items() if k >= n}
            self._snapshots = {k: v for k, v in self._snapshots.items() if k >= n}

    def _queue(self, sql: str, args: tuple[Any, ...]) -> None:
        self._pending.append((sql, args))
        self._appended += 1

    async def durable(self) -> None:
        target = self._appended
        if self._written >= target:
            return
        async with self._writing:  # whoever comes while a write runs shares the next one
            if self._written >= target:
                return
            with self._mutex:
                batch, self._pending = self._pending, []
                upto = self._appended
            if self.lease is not None:
                await self.ledger._many([lease_fence(self.lease), *batch], frozenset({0}))
            else:
                await self.ledger._many(batch)
            self._written = upto

    def close(self) -> None:
        """What is not written yet made no event that went out: nothing to keep."""

    def remove(self) -> None:
        """The run is over: whoever ends it purges its journals (:func:`purge`)."""
        with self._mutex:
            self._pending = []


async def purge(ledger: Ledger, run_id: str) -> None:
    """A run's journals, every shard's: gone (the run is over)."""
    await ledger._many(
        [
            (f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            for table in ("journal_commands", "journal_snapshots")
        ]
    )
