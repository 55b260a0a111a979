"""A stream run's journal: the driver's commands, in order, so a restart continues the same run.

Everything a pack makes follows from its seed and the commands the driver gave it (see
:mod:`.drive`): when to start, which slices of time, skips, rate changes, polls. The journal
keeps those commands (one JSON line each, written and flushed before the events they made
are released, so a process that dies has journaled all it sent), and, every
``snapshot_interval``, a *snapshot*: the packs and lanes as they are, sealed
(:mod:`datafactory.states`), with the journal starting afresh after it.

A restart builds the packs from the config, loads the newest snapshot that no checkpoint mark
is behind, and replays the commands after it: the packs go through exactly what they went
through before, so nothing is created twice, and the events at and after each stream's mark
come out again byte for byte (they are sent again: true duplicates), the rest is dropped.
Where it is kept is a :class:`Store`: a folder (:class:`FolderStore`, one daemon's runs:
``<folder>/journal-<n>.jsonl`` and ``<folder>/snapshot-<n>.state``, where snapshot ``n`` is the
state before journal ``n``'s first command, ``n = 0`` being the config's own start), or the
shared ledger (:mod:`datafactory.control.journal_ledger`: a shard any daemon may take over).
A store says when what was recorded is durable (:meth:`Store.durable`); the engine releases
no event before the commands that made it are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import structlog
from pydantic import TypeAdapter

from datafactory.engine.blocks import RecordBlock
from datafactory.engine.rate import RateProfile
from datafactory.runtime.drive import Driver
from datafactory.states import StateError, seal, unseal

log = structlog.get_logger("datafactory.journal")
_PROFILE: TypeAdapter[Any] = TypeAdapter(RateProfile)


class Store(ABC):
    """Where a journal is kept: numbered parts of commands, and sealed snapshots."""

    @abstractmethod
    def parts(self) -> list[int]:
        """The journal parts there are, in order."""

    @abstractmethod
    def commands(self, n: int) -> Iterator[dict[str, Any]]: ...

    @abstractmethod
    def snapshot(self, n: int) -> tuple[bytes, dict[str, int]] | None:
        """Snapshot ``n`` and its streams' seqs (None: not there, or unreadable)."""

    @abstractmethod
    def snapshot_seqs(self, n: int) -> dict[str, int] | None:
        """Snapshot ``n``'s streams' seqs, without the snapshot (None: no such snapshot)."""

    @abstractmethod
    def start_part(self, n: int) -> None:
        """Commands go to part ``n`` from now on."""

    @abstractmethod
    def append(self, line: bytes) -> None:
        """One command line to the current part (any thread; before its events go out)."""

    @abstractmethod
    def save_snapshot(self, n: int, data: bytes, seqs: dict[str, int]) -> None:
        """Snapshot ``n`` (until it is durable, a restart uses an older one)."""

    @abstractmethod
    def drop_before(self, n: int) -> None:
        """Parts and snapshots below ``n`` are needed no more."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def remove(self) -> None:
        """The run is over: everything goes."""

    @abstractmethod
    async def durable(self) -> None:
        """Returns once every command appended so far is durable (where a restart, in this
        process or another, will find it)."""


class FolderStore(Store):
    """A folder on this machine: each command written and flushed to the OS before its events
    go out (a killed process keeps it), snapshots written and synced."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._file: IO[bytes] | None = None

    def parts(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.glob("journal-*.jsonl"):
            with contextlib.suppress(ValueError):
                found.append(int(p.stem.partition("-")[2]))
        return sorted(found)

    def commands(self, n: int) -> Iterator[dict[str, Any]]:
        return _commands(self._journal(n))

    def snapshot(self, n: int) -> tuple[bytes, dict[str, int]] | None:
        seqs = self.snapshot_seqs(n)
        if seqs is None:
            return None
        return self._snapshot(n).read_bytes(), seqs

    def snapshot_seqs(self, n: int) -> dict[str, int] | None:
        path = self._seqs(n)
        if not path.exists() or not self._snapshot(n).exists():
            return None
        try:
            return _seqs_of(path.read_bytes(), str(path))
        except (ValueError, OSError) as e:
            log.error("snapshot_unreadable", file=str(path), error=str(e))
            return None

    def start_part(self, n: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._file is not None:
            self._file.close()
        self._file = open(self._journal(n), "ab")  # noqa: SIM115 - held open

    def append(self, line: bytes) -> None:
        if self._file is not None:
            self._file.write(line)
            self._file.flush()  # in the OS before its events go out: a killed process keeps it

    async def durable(self) -> None:
        """Each command is in the OS once appended."""

    def save_snapshot(self, n: int, data: bytes, seqs: dict[str, int]) -> None:
        _write_durably(self._snapshot(n), data)
        _write_durably(self._seqs(n), orjson.dumps(seqs))

    def drop_before(self, n: int) -> None:
        for k in self.parts():
            if k < n:
                self._journal(k).unlink(missing_ok=True)
                self._snapshot(k).unlink(missing_ok=True)
                self._seqs(k).unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        for p in self.folder.glob("*"):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()

    def _journal(self, n: int) -> Path:
        return self.folder / f"journal-{n}.jsonl"

    def _snapshot(self, n: int) -> Path:
        return self.folder / f"snapshot-{n}.state"

    def _seqs(self, n: int) -> Path:
        return self.folder / f"snapshot-{n}.json"


class Journal:
    """One run's (or shard's) journal: append commands, take snapshots, replay on restart."""

    def __init__(self, store: Store | Path) -> None:
        self.store = store if isinstance(store, Store) else FolderStore(store)
        self._lock = threading.Lock()
        self._open = False
        self.part = 0  # the journal part being written
        self.commands = 0  # commands in it

    # -- writing --------------------------------------------------------------------------

    def open(self) -> None:
        """Append to the newest part (a new run: part 0)."""
        parts = self.store.parts()
        self.part = parts[-1] if parts else 0
        self.store.start_part(self.part)
        self._open = True

    def record(self, command: dict[str, Any]) -> None:
        """One command (called under the pack's lock, from any thread)."""
        line = orjson.dumps(command) + b"\n"
        with self._lock:
            if not self._open:
                return
            self.store.append(line)
            self.commands += 1

    def snapshot(self, driver: Driver) -> tuple[int, bytes, dict[str, int]]:
        """The packs and lanes now, sealed, and the journal goes on in a new part. Hold every
        pack's lock (no command runs meanwhile), then write it with :meth:`save` (without
        them). A restart may start from it once no stream's mark is below its seqs."""
        seqs = {name: lane.seq for name, lane in driver.lanes.items()}
        data = seal({"packs": driver.packs, "lanes": driver.lanes, "seqs": seqs})
        with self._lock:
            nxt = self.part + 1
            self.store.start_part(nxt)
            self.part, self.commands = nxt, 0
        return nxt, data, seqs

    def save(self, n: int, data: bytes, seqs: dict[str, int]) -> None:
        """Write snapshot ``n`` durably (until it is, restarts use an older one)."""
        self.store.save_snapshot(n, data, seqs)

    async def snapshots(self, driver: Driver, interval: float) -> None:
        """Every ``interval`` seconds: a snapshot, so a restart replays little."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._take, driver)
            except Exception as e:  # the journal still has everything: a restart replays more
                log.error("snapshot_failed", error=repr(e))

    def _take(self, driver: Driver) -> None:
        locks = [p.lock for _, p in sorted(driver.packs.items())]
        for lock in locks:  # no command runs while the state is taken
            lock.acquire()
        try:
            n, data, seqs = self.snapshot(driver)
        finally:
            for lock in reversed(locks):
                lock.release()
        self.save(n, data, seqs)
        log.info("snapshot_saved", part=n, bytes=len(data), seqs=seqs)

    def prune(self, marks: dict[str, int]) -> None:
        """Forget what no restart needs: everything before the newest usable snapshot."""
        self.store.drop_before(self._usable(marks))

    def close(self) -> None:
        with self._lock:
            self._open = False
            self.store.close()

    def remove(self) -> None:
        """The run is over: its journal goes."""
        with self._lock:
            self._open = False
        self.store.remove()

    # -- restart --------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self.store.parts())

    def replay(self, driver: Driver, marks: dict[str, int]) -> dict[str, list[RecordBlock]]:
        """Take the driver (built from the config, not started) through the journal: from the
        newest snapshot no mark is behind, every command after it. Returns, per stream, the
        events at or after its mark, in order (to send again)."""
        start = self._usable(marks)
        if start > 0:
            found = self.store.snapshot(start)
            if found is None:
                raise StateError(f"snapshot {start} is gone")
            data, index = found
            state = unseal(data, f"snapshot {start}")
            if state["seqs"] != index:
                raise StateError(f"snapshot {start} does not match its index")
            driver.packs.clear()
            driver.packs.update(state["packs"])
            for name, lane in state["lanes"].items():
                if name in driver.lanes:
                    lane.plan = driver.lanes[name].plan  # the config's, as it is now
                driver.lanes[name] = lane
        journal, driver.journal = driver.journal, None  # what is replayed is journaled already
        again: dict[str, list[RecordBlock]] = {}
        commands = 0
        try:
            for n in self.store.parts():
                if n < start:
                    continue
                for cmd in self.store.commands(n):
                    commands += 1
                    for block in replay_command(driver, cmd):
                        mark = marks.get(block.stream, 0)
                        if len(block) and int(block.seq[-1]) >= mark:
                            keep = (
                                block
                                if int(block.seq[0]) >= mark
                                else block.take(slice(mark - int(block.seq[0]), None))
                            )
                            again.setdefault(block.stream, []).append(keep)
        finally:
            driver.journal = journal
        log.info(
            "journal_replayed",
            snapshot=start,
            commands=commands,
            again={k: sum(map(len, v)) for k, v in again.items()},
        )
        return again

    def _usable(self, marks: dict[str, int]) -> int:
        """The newest snapshot whose streams are all at or before their marks (0: none)."""
        best = 0
        for n in self.store.parts():
            if n == 0 or (seqs := self.store.snapshot_seqs(n)) is None:
                continue
            if all(seq <= marks.get(name, 0) for name, seq in seqs.items()):
                best = max(best, n)
        return best


def _seqs_of(data: bytes, where: str) -> dict[str, int]:
    seqs = orjson.loads(data)
    if not isinstance(seqs, dict) or not all(isinstance(v, int) for v in seqs.values()):
        raise ValueError(f"{where}: not a snapshot index")
    return seqs


def _commands(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return  # a line cut short by a crash: its events were never released
            yield orjson.loads(line)


def replay_command(driver: Driver, cmd: dict[str, Any]) -> list[RecordBlock]:
    """One journaled command, again; the events it makes."""
    op, name = cmd["op"], cmd["s"]
    if name not in driver.lanes:
        log.warning("journal_stream_unknown", stream=name, op=op)
        return []
    if op == "start":
        driver.start(name, cmd["t0"])
    elif op == "paced":
        return driver.paced(name, cmd["a"], cmd["b"], cmd["limit"], cmd["end"], cmd["one"])
    elif op == "skip":
        driver.skip(name, cmd["a"], cmd["b"])
    elif op == "profile":
        profile = _PROFILE.validate_python(cmd["rate"])
        driver.set_profile(name, profile, cmd["at"], cmd.get("owe"))
    elif op == "poll":
        block = driver.poll(name, cmd["until"], cmd["limit"], cmd["final"])
        return [block] if block is not None else []
    else:
        raise StateError(f"journal: unknown command {op!r}")
    return []


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
