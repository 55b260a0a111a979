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
import os
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

import structlog

from datafactory.runtime.shards import STATUS_INTERVAL, Host, ShardJob

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
