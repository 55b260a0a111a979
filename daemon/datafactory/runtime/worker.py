"""A worker process: some of a run's shards in an event loop of their own (see :mod:`.shards`).

The parent starts it with a :class:`~datafactory.runtime.shards.ShardJob` and a pipe. Over
the pipe the worker sends its shards' status every ``STATUS_INTERVAL`` (what the parent
shows, sums and checkpoints), and at the end their results; it takes commands (stop, pause,
resume, checkpointed) and reloads. The parent alone decides when shards stop: the worker
ignores SIGINT and SIGTERM (a terminal's Ctrl-C and systemd's stop reach the whole process
group; the parent drains its workers). If the parent dies, the worker exits at once, as the
parent did: whoever runs the shards next goes on from their checkpoint marks.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import structlog

from datafactory.config import Config
from datafactory.runtime.host import STATUS_INTERVAL, Host, ShardJob, Status

log = structlog.get_logger("datafactory.worker")


def main(conn: Connection, job: ShardJob) -> None:
    """The worker's entry point (a spawned process)."""
    from datafactory.logs import configure_logging

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    configure_logging(job.log_level, job.log_format)
    try:
        import uvloop

        uvloop.run(_serve(conn, job))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_serve(conn, job))
    finally:
        conn.close()


async def _serve(conn: Connection, job: ShardJob) -> None:
    loop = asyncio.get_running_loop()
    host = Host(job)
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def read() -> None:  # in a thread: recv blocks
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the parent died: so do its shards
                log.error("worker_orphaned", shards=sorted(job.shards))
                os._exit(1)
            loop.call_soon_threadsafe(inbox.put_nowait, msg)

    threading.Thread(target=read, daemon=True).start()

    def send(msg: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):
            conn.send(msg)

    async def commands() -> None:
        while True:
            msg = await inbox.get()
            if msg[0] == "command":
                host.command(msg[1], msg[2])
            elif msg[0] == "reload":
                try:
                    result = await host.reload(msg[2])
                except Exception as e:  # the parent validated it: say what went wrong
                    result = {"applied": [], "needs_restart": [], "error": str(e)}
                send(("reply", msg[1], result))

    async def report() -> None:
        while True:
            send(("status", host.status()))
            await asyncio.sleep(STATUS_INTERVAL)

    tasks = [asyncio.create_task(commands()), asyncio.create_task(report())]
    try:
        results = await host.run()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    send(("status", host.status()))
    send(("done", results))
    log.info("worker_done", shards=sorted(results))


# -- the parent's side ------------------------------------------------------------------


class Worker:
    """A worker process hosting some shards; its statuses as it last sent them."""

    def __init__(self, job: ShardJob, on_status: Callable[[], None]) -> None:
        self.job = job
        self.statuses: dict[int, Status] = {i: Status() for i in job.shards}
        self.results: dict[int, dict[str, Any] | str] | None = None
        self._on_status = on_status
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._token = 0
        self._done: asyncio.Future[dict[int, dict[str, Any] | str]] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        ctx = multiprocessing.get_context("spawn")  # no forked event loop, no copied threads
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=main, args=(child, self.job), name=f"shards-{min(self.job.shards)}"
        )
        self.process.start()
        child.close()
        threading.Thread(target=self._read, args=(loop,), daemon=True).start()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        """The worker's messages, handed to the loop (in a thread: ``recv`` blocks)."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                break
            loop.call_soon_threadsafe(self._on_message, msg)
        loop.call_soon_threadsafe(self._ended)

    def _on_message(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "status":
            self.statuses.update(msg[1])
            self._on_status()
        elif kind == "reply":
            fut = self._replies.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif kind == "done":
            self.results = msg[1]

    def _ended(self) -> None:
        """The pipe closed: the worker is gone (its results sent, or it died)."""
        self.process.join(timeout=5)
        results = self.results
        if results is None:
            code = self.process.exitcode
            results = {
                i: f"worker process exited ({code}) before its shard ended" for i in self.job.shards
            }
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(RuntimeError("worker process ended"))
        if self._done is not None and not self._done.done():
            self._done.set_result(results)

    def send(self, op: str, arg: Any = None) -> None:
        with contextlib.suppress(OSError, ValueError):  # a worker that ended has no pipe
            self.conn.send(("command", op, arg))

    async def reload(self, new: Config) -> dict[str, Any]:
        self._token += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[self._token] = fut
        self.conn.send(("reload", self._token, new))
        result: dict[str, Any] = await fut
        return result

    async def wait(self) -> dict[int, dict[str, Any] | str]:
        assert self._done is not None
        return await self._done

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
