"""The durable ledger: runs, their state history, config snapshots, counters, checkpoints.

SQLite by default (``sqlite:///path/ledger.db``; the stdlib driver in a worker thread, WAL
mode), PostgreSQL (``postgresql://...``, asyncpg) when several daemons share one ledger. Both
run the same SQL; only the placeholders and the id column differ.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

COUNTERS = ("generated", "chaos_dropped", "sent", "acked", "failed", "retried", "shed")

_TABLES = [
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, config TEXT NOT NULL,
        config_hash TEXT NOT NULL, source TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '',
        created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
        error TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS transitions (
        id {serial}, run_id TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS counters (
        run_id TEXT NOT NULL, stream TEXT NOT NULL, sink TEXT NOT NULL,
        generated BIGINT NOT NULL DEFAULT 0, chaos_dropped BIGINT NOT NULL DEFAULT 0,
        sent BIGINT NOT NULL DEFAULT 0, acked BIGINT NOT NULL DEFAULT 0,
        failed BIGINT NOT NULL DEFAULT 0, retried BIGINT NOT NULL DEFAULT 0,
        shed BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, stream, sink))""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        run_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, released BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, stream))""",
    # a sharded stream run's shards: who runs each (a lease: owner, expiry, and an epoch that
    # every take-over raises, so a daemon that lost a shard cannot write for it), and whether
    # it is done (see datafactory.control.leases)
    """CREATE TABLE IF NOT EXISTS shard_leases (
        run_id TEXT NOT NULL, shard INTEGER NOT NULL, owner TEXT NOT NULL DEFAULT '',
        expires DOUBLE PRECISION NOT NULL DEFAULT 0, epoch BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'open', PRIMARY KEY (run_id, shard))""",
    # the daemons sharing the ledger: each writes when it was last alive (fair shares)
    """CREATE TABLE IF NOT EXISTS daemons (
        owner TEXT PRIMARY KEY, seen DOUBLE PRECISION NOT NULL)""",
    # a shard's journal where any daemon can replay it (datafactory.control.journal_ledger)
    """CREATE TABLE IF NOT EXISTS journal_commands (
        run_id TEXT NOT NULL, shard INTEGER NOT NULL, part INTEGER NOT NULL,
        n INTEGER NOT NULL, line TEXT NOT NULL, PRIMARY KEY (run_id, shard, part, n))""",
    """CREATE TABLE IF NOT EXISTS journal_snapshots (
        run_id TEXT NOT NULL, shard INTEGER NOT NULL, part INTEGER NOT NULL,
        data {blob} NOT NULL, seqs TEXT NOT NULL, PRIMARY KEY (run_id, shard, part))""",
    # batch mode: a (shard, day) partition is written once its files are all in place
    """CREATE TABLE IF NOT EXISTS batch_partitions (
        batch_id TEXT NOT NULL, shard INTEGER NOT NULL, chunk INTEGER NOT NULL,
        rows BIGINT NOT NULL, bytes BIGINT NOT NULL, files TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT '',
        at DOUBLE PRECISION NOT NULL, PRIMARY KEY (batch_id, shard, chunk))""",
]
# columns added since a table was first made: (table, column, type); added where missing
_ADDED = [("counters", "shed", "BIGINT NOT NULL DEFAULT 0")]


def _history(run_id: str, frm: str, to: str, at: float, reason: str) -> tuple[str, tuple[Any, ...]]:
    """A run's move, in its history."""
    return (
        "INSERT INTO transitions (run_id, from_state, to_state, at, reason) VALUES (?, ?, ?, ?, ?)",
        (run_id, frm, to, at, reason),
    )


class Fenced(RuntimeError):
    """A statement that had to change exactly one row (a lease held) changed none: the whole
    transaction was rolled back."""


@dataclass
class RunRecord:
    id: str
    name: str
    state: str
    config: str  # the YAML text the run was created from (after overrides)
    config_hash: str
    source: str  # config name, file, or "inline"
    created: float
    updated: float
    error: str = ""
    owner: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "config_hash": self.config_hash,
            "source": self.source,
            "created": self.created,
            "updated": self.updated,
            "error": self.error,
        }


class Ledger(ABC):
    url: str

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> None: ...

    @abstractmethod
    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def _many(
        self, statements: list[tuple[str, tuple[Any, ...]]], fenced: frozenset[int] = frozenset()
    ) -> None:
        """Several statements in one transaction. Those at the indexes ``fenced`` must each
        change exactly one row, else nothing is changed and :class:`Fenced` is raised."""

    @abstractmethod
    async def _update(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """One statement; how many rows it changed."""

    async def now(self) -> float:
        """The ledger's clock (epoch s): every daemon sharing a ledger measures leases by it."""
        return time.time()

    async def create_run(self, r: RunRecord) -> None:
        await self._many(
            [
                (
                    "INSERT INTO runs (id, name, state, config, config_hash, source, owner, "
                    "created, updated, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.id, r.name, r.state, r.config, r.config_hash, r.source, r.owner,
                        r.created, r.updated, r.error,
                    ),
                ),
                (
                    "INSERT INTO transitions (run_id, from_state, to_state, at, reason) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (r.id, "", r.state, r.created, "created"),
                ),
            ]
        )  # fmt: skip

    async def transition(
        self, run_id: str, frm: str, to: str, reason: str = "", error: str = ""
    ) -> None:
        now = time.time()
        await self._many(
            [
                (
                    "UPDATE runs SET state = ?, updated = ?, error = ? WHERE id = ?",
                    (to, now, error, run_id),
                ),
                _history(run_id, frm, to, now, reason),
            ]
        )

    async def transition_if(self, run_id: str, frm: str, to: str, reason: str = "") -> bool:
        """``frm`` -> ``to`` only if the run is still ``frm`` (several daemons may try the same
        move at once: one makes it). True: this call made it."""
        now = time.time()
        try:
            await self._many(
                [
                    (
                        "UPDATE runs SET state = ?, updated = ? WHERE id = ? AND state = ?",
                        (to, now, run_id, frm),
                    ),
                    _history(run_id, frm, to, now, reason),
                ],
                frozenset({0}),
            )
        except Fenced:
            return False
        return True

    async def set_config(self, run_id: str, text: str, digest: str) -> None:
        """A live reload changed the run's config: a restart resumes with the new one."""
        await self._execute(
            "UPDATE runs SET config = ?, config_hash = ?, updated = ? WHERE id = ?",
            (text, digest, time.time(), run_id),
        )

    async def set_owner(self, run_id: str, owner: str) -> None:
        await self._execute("UPDATE runs SET owner = ? WHERE id = ?", (owner, run_id))

    async def checkpoint(
        self,
        run_id: str,
        marks: dict[str, tuple[int, int]],
        counters: dict[tuple[str, str], dict[str, int]],
        fence: tuple[str, tuple[Any, ...]] | None = None,
    ) -> None:
        """Per stream (seq every event below is accounted for, released) and the counters,
        in one transaction: a restart resumes from a consistent point. ``fence``: a statement
        that must change one row in the same transaction (a shard's lease renewed: a daemon
        that lost the lease moves no mark)."""
        now = time.time()
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            (
                "INSERT INTO checkpoints (run_id, stream, seq, released, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, stream) DO UPDATE SET "
                "seq = excluded.seq, released = excluded.released, at = excluded.at",
                (run_id, stream, seq, released, now),
            )
            for stream, (seq, released) in marks.items()
        ]
        cols = ", ".join(COUNTERS)
        sets = ", ".join(f"{c} = excluded.{c}" for c in COUNTERS)
        for (stream, sink), values in counters.items():
            stmts.append(
                (
                    f"INSERT INTO counters (run_id, stream, sink, {cols}) "
                    f"VALUES (?, ?, ?, {', '.join('?' * len(COUNTERS))}) "
                    f"ON CONFLICT (run_id, stream, sink) DO UPDATE SET {sets}",
                    (run_id, stream, sink, *(int(values.get(c, 0)) for c in COUNTERS)),
                )
            )
        stmts.append(("UPDATE runs SET updated = ? WHERE id = ?", (now, run_id)))
        if fence is None:
            await self._many(stmts)
        else:
            await self._many([fence, *stmts], frozenset({0}))

    async def batch_partition_done(
        self,
        batch_id: str,
        shard: int,
        chunk: int,
        rows: int,
        nbytes: int,
        files: str,
        state: str = "",
    ) -> None:
        """A batch partition's files are all written (``files``: their JSON list; ``state``:
        where the shard's state after it was saved, if it was)."""
        await self._execute(
            "INSERT INTO batch_partitions (batch_id, shard, chunk, rows, bytes, files, state, "
            "at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (batch_id, shard, chunk) DO NOTHING",
            (batch_id, shard, chunk, rows, nbytes, files, state, time.time()),
        )

    async def batch_partitions(
        self, batch_id: str, shard: int | None = None, with_files: bool = False
    ) -> list[tuple[Any, ...]]:
        """(shard, chunk, rows, bytes, state[, files]) of the finished partitions, in order."""
        cols = "shard, chunk, rows, bytes, state" + (", files" if with_files else "")
        sql = f"SELECT {cols} FROM batch_partitions WHERE batch_id = ?"
        args: tuple[Any, ...] = (batch_id,)
        if shard is not None:
            sql += " AND shard = ?"
            args = (batch_id, shard)
        rows = await self._fetch(sql + " ORDER BY shard, chunk", args)
        return [tuple(r) for r in rows]

    def _record(self, row: tuple[Any, ...]) -> RunRecord:
        return RunRecord(
            id=row[0],
            name=row[1],
            state=row[2],
            config=row[3],
            config_hash=row[4],
            source=row[5],
            owner=row[6],
            created=float(row[7]),
            updated=float(row[8]),
            error=row[9],
        )

    _RUN_COLS = "id, name, state, config, config_hash, source, owner, created, updated, error"

    async def runs(self) -> list[RunRecord]:
        rows = await self._fetch(f"SELECT {self._RUN_COLS} FROM runs ORDER BY created")
        return [self._record(r) for r in rows]

    async def get(self, run_id: str) -> RunRecord | None:
        rows = await self._fetch(f"SELECT {self._RUN_COLS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            return None
        rec = self._record(rows[0])
        hist = await self._fetch(
            "SELECT from_state, to_state, at, reason FROM transitions WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        rec.history = [{"from": h[0], "to": h[1], "at": float(h[2]), "reason": h[3]} for h in hist]
        return rec

    async def checkpoints(self, run_id: str) -> dict[str, tuple[int, int]]:
        rows = await self._fetch(
            "SELECT stream, seq, released FROM checkpoints WHERE run_id = ?", (run_id,)
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    async def counters(self, run_id: str) -> dict[tuple[str, str], dict[str, int]]:
        rows = await self._fetch(
            f"SELECT stream, sink, {', '.join(COUNTERS)} FROM counters WHERE run_id = ?",
            (run_id,),
        )
        return {(r[0], r[1]): dict(zip(COUNTERS, map(int, r[2:]), strict=True)) for r in rows}


class SqliteLedger(Ledger):
    def __init__(self, url: str) -> None:
        self.url = url
        # sqlite:///relative/x.db is relative; sqlite:////abs/x.db absolute (as SQLAlchemy)
        self.path = Path(urlparse(url).path[1:])
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # the timeout first: several processes (batch workers) open one ledger at once
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for ddl in _TABLES:
                db.execute(ddl.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB"))
            for table, column, kind in _ADDED:
                have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            return db

        self._db = await asyncio.to_thread(connect)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("ledger is not open")
        return self._db

    async def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        async with self._lock:
            await asyncio.to_thread(self._conn().execute, sql, args)

    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return list(self._conn().execute(sql, args).fetchall())

        async with self._lock:
            return await asyncio.to_thread(run)

    async def _update(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        async with self._lock:
            cur = await asyncio.to_thread(self._conn().execute, sql, args)
            return int(cur.rowcount)

    async def _many(
        self, statements: list[tuple[str, tuple[Any, ...]]], fenced: frozenset[int] = frozenset()
    ) -> None:
        def run() -> None:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for i, (sql, args) in enumerate(statements):
                    if db.execute(sql, args).rowcount != 1 and i in fenced:
                        raise Fenced(sql.split(" WHERE")[0])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        async with self._lock:
            await asyncio.to_thread(run)


def _pg(sql: str) -> str:
    """``?`` placeholders to asyncpg's ``$1, $2, ...``."""
    out, n = [], 0
    for ch in sql:
        if ch == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    return "".join(out)


class PostgresLedger(Ledger):
    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4)
        # several daemons may start at once: serialise the schema creation
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7395117)")
            for ddl in _TABLES:
                await conn.execute(ddl.format(serial="BIGSERIAL PRIMARY KEY", blob="BYTEA"))
            for table, column, kind in _ADDED:
                await conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(_pg(sql), *args)

    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._pool.acquire() as conn:
            return [tuple(r) for r in await conn.fetch(_pg(sql), *args)]

    async def _update(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        async with self._pool.acquire() as conn:
            return _rows(await conn.execute(_pg(sql), *args))

    async def _many(
        self, statements: list[tuple[str, tuple[Any, ...]]], fenced: frozenset[int] = frozenset()
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            for i, (sql, args) in enumerate(statements):
                status = await conn.execute(_pg(sql), *args)
                if i in fenced and _rows(status) != 1:
                    raise Fenced(sql.split(" WHERE")[0])  # the transaction rolls back

    async def now(self) -> float:
        async with self._pool.acquire() as conn:
            return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))


def _rows(status: str) -> int:
    """Rows a statement changed, from asyncpg's status ("UPDATE 1", "INSERT 0 1")."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def open_ledger(url: str) -> Ledger:
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        return SqliteLedger(url)
    if scheme in ("postgresql", "postgres"):
        return PostgresLedger(url)
    raise ValueError(f"ledger url must be sqlite:///PATH or postgresql://..., got {url!r}")
