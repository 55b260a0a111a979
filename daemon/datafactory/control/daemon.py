"""``datafactory serve``: the long-running daemon.

It opens the ledger and resumes its live runs, serves the admin API and console, watches the
configs folder (watchfiles) and reloads on change or SIGHUP, streams telemetry, speaks
systemd's notify protocol, and on SIGTERM drains every run and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from datafactory.config import ConfigError, parse_config, read_config_text
from datafactory.control.api import AdminApi
from datafactory.control.ledger import open_ledger
from datafactory.control.notify import Notifier
from datafactory.control.runs import LIVE, NotFound, RunManager, State
from datafactory.states import allowed_locations
from datafactory.telemetry.metrics import Families, Labelled, families

log = structlog.get_logger("datafactory.daemon")
# a named config: NAME.yaml in the configs folder
# a token for a daemon that listens beyond loopback: long enough not to be guessed
MIN_TOKEN = 16
CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def runs_collector(manager: RunManager) -> Labelled:
    """Every live run's engine metrics, with a ``run`` label, merged by metric name."""

    def sources() -> Iterator[tuple[dict[str, str], Families]]:
        for run in list(manager.runs.values()):
            if run.engine is not None:
                yield {"run": run.id}, families(run.engine.metrics.registry)

    return Labelled(sources)


class Telemetry:
    """Once a second: per run, stream and sink events/s, chaos counts, errors; to every SSE
    subscriber (bounded queues: a slow client drops events, never slows the daemon)."""

    def __init__(self, manager: RunManager) -> None:
        self.manager = manager
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._last: dict[tuple[str, str], tuple[int, float]] = {}

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=64)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.subscribers.discard(q)

    def publish(self, event: dict[str, Any]) -> None:
        for q in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(event)

    def tick(self) -> dict[str, Any]:
        now = time.monotonic()
        runs = []
        for run in list(self.manager.runs.values()):
            view: dict[str, Any] = {"id": run.id, "name": run.record.name, "state": str(run.state)}
            if run.engine is not None:
                snap = run.engine.snapshot()
                view["streams"] = {
                    n: {
                        "eps": round(v["rate"], 1),
                        "target": v["target_rate"],
                        "released": v["released"],
                    }
                    for n, v in snap["streams"].items()
                }
                sinks: dict[str, Any] = {}
                for name, k in snap["sinks"].items():
                    sent = sum(k["sent"].values())
                    prev = self._last.get((run.id, name))
                    eps = (sent - prev[0]) / max(now - prev[1], 1e-6) if prev else 0.0
                    self._last[(run.id, name)] = (sent, now)
                    sinks[name] = {
                        "eps": round(eps, 1),
                        "sent": sent,
                        "failed": sum(k["failed"].values()),
                        "shed": sum(k["shed"].values()),
                        "errors": k["errors"],
                        "lag_events": k["lag_events"],
                        "lag_seconds": k["lag_seconds"],
                        "buffer": k["buffer"],
                        "disk": k["disk"],
                        "holding_back": k["holding_back"],
                    }
                view["sinks"] = sinks
                view["chaos"] = snap["chaos"]
            view["errors"] = run.errors[-5:]
            runs.append(view)
        return {"type": "tick", "time": time.time(), "runs": runs}

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.publish(self.tick())


class Daemon:
    def __init__(
        self,
        *,
        listen: str = "127.0.0.1:9400",
        ledger: str = "sqlite:///./.datafactory/ledger.db",
        token: str | None = None,
        configs: str | None = None,
        autostart: list[str] | None = None,
        owner: str = "",
        watch: bool = True,
        checkpoint_interval: float = 1.0,
        states: list[str] | None = None,
        data_root: str | None = None,
        workers: int = 1,
    ) -> None:
        if not 1 <= workers <= 256:
            raise ValueError(f"--workers {workers}: between 1 and 256 worker processes")
        host, _, port = listen.rpartition(":")
        if not _loopback(host) and (token is None or len(token) < MIN_TOKEN):
            raise ValueError(
                f"refusing to listen on {host} without a token of at least {MIN_TOKEN} "
                "characters: set DATAFACTORY_TOKEN (or --token-file; e.g. `openssl rand -hex "
                "24`), or listen on 127.0.0.1"
            )
        self.host, self.port = host, int(port)
        self.token = token
        self.configs = Path(configs) if configs else None
        self.autostart = autostart or []
        self.watch = watch
        self.manager = RunManager(
            open_ledger(ledger),
            owner=owner,
            checkpoint_interval=checkpoint_interval,
            states=allowed_locations(states),
            data_root=Path(data_root) if data_root else None,
            workers=workers,
        )
        self.telemetry = Telemetry(self.manager)
        self.manager.listeners.append(
            lambda run, ev: self.telemetry.publish({"type": "state", "run": run.id, **ev})
        )
        self.registry = CollectorRegistry()
        self.registry.register(runs_collector(self.manager))
        self.reload_failures = Counter(
            "datafactory_config_reload_failures",
            "Config reloads rejected (the running config kept running)",
            registry=self.registry,
        )
        self.reloads = Counter(
            "datafactory_config_reloads", "Config reloads applied", registry=self.registry
        )
        runs_gauge = Gauge("datafactory_runs", "Runs by state", ["state"], registry=self.registry)
        for st in State:
            runs_gauge.labels(str(st)).set_function(self._counter_of(st))
        self.notifier = Notifier()
        self.api = AdminApi(self, token)
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._ready = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._reload_lock = asyncio.Lock()

    def _counter_of(self, state: State) -> Callable[[], float]:
        return lambda: float(sum(1 for r in self.manager.runs.values() if r.state == state))

    # -- configs ----------------------------------------------------------------------------

    def config_names(self) -> list[str]:
        if self.configs is None or not self.configs.is_dir():
            return []
        return sorted(p.stem for p in self.configs.glob("*.yaml"))

    def config_text(self, name: str) -> str:
        """A named config's text (ConfigError: not UTF-8, too big)."""
        if self.configs is None or not CONFIG_NAME.fullmatch(name):
            raise NotFound(f"config {name[:64]!r}")
        path = self.configs / f"{name}.yaml"
        if not path.is_file():
            raise NotFound(f"config {name!r} (configs: {', '.join(self.config_names())})")
        return read_config_text(path)

    async def reload_all(self, reason: str) -> dict[str, Any]:
        """Validate every named config; apply each valid one to its live runs; an invalid
        one is rejected (logged, counted) and its runs keep their running config."""
        reloaded: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        async with self._reload_lock:
            for name in self.config_names():
                runs = [
                    r
                    for r in self.manager.runs.values()
                    if r.record.source == f"config:{name}" and r.state in LIVE
                ]
                if not runs:
                    continue
                try:
                    text = self.config_text(name)
                    source = str(self.configs / f"{name}.yaml")  # type: ignore[operator]
                    await asyncio.to_thread(parse_config, text, source)
                except (ConfigError, NotFound) as e:
                    self.reload_failures.inc()
                    log.error("reload_rejected", config=name, reason=reason, error=str(e))
                    rejected.append({"config": name, "error": str(e)})
                    continue
                for run in runs:
                    if run.record.config == text:
                        continue
                    result = await self.manager.reload(run.id, text)
                    if result["needs_restart"]:
                        result["replaced_by"] = await self._replace(run, text, name)
                    else:
                        run.record.config = text
                    self.reloads.inc()
                    log.info("reload_applied", config=name, run=run.id, reason=reason, **result)
                    reloaded.append({"config": name, "run": run.id, **result})
        return {"reloaded": reloaded, "rejected": rejected}

    async def _replace(self, run: Any, text: str, name: str) -> str | None:
        """Sinks or streams changed: drain the run, start one with the new config; if that
        fails to start, roll back to the old config."""
        old_text = run.record.config
        await self.manager.stop(run.id)
        if run.task is not None:
            await run.task
        new = await self.manager.create(text, f"config:{name}")
        for _ in range(300):
            if new.state in (State.RUNNING, State.FAILED, State.COMPLETED):
                break
            await asyncio.sleep(0.1)
        if new.state == State.FAILED:
            log.error("reload_rolled_back", config=name, failed_run=new.id)
            self.reload_failures.inc()
            back = await self.manager.create(old_text, f"config:{name}")
            return back.id
        return new.id

    async def _watch(self) -> None:
        from watchfiles import awatch

        assert self.configs is not None
        async for _changes in awatch(self.configs, stop_event=self._stop, debounce=200):
            try:  # whatever a file holds, the watcher goes on
                await self.reload_all("watch")
            except Exception as e:
                self.reload_failures.inc()
                log.error("reload_failed", reason="watch", error=type(e).__name__)

    # -- lifecycle --------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "starting"
        if self._stop.is_set():
            return False, "shutting down"
        return True, "ok"

    def stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        resumed = await self.manager.start()
        if resumed:
            log.info("runs_resumed", runs=resumed)
        self._runner = web.AppRunner(self.api.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server: Any = site._server
            self.port = int(server.sockets[0].getsockname()[1])
        live_sources = {r.record.source for r in self.manager.runs.values() if r.state in LIVE}
        for name in self.autostart:
            if f"config:{name}" not in live_sources:
                await self.manager.create(self.config_text(name), f"config:{name}")
        self._tasks.append(asyncio.create_task(self.telemetry.loop(), name="telemetry"))
        if self.watch and self.configs is not None and self.configs.is_dir():
            self._tasks.append(asyncio.create_task(self._watch(), name="watch"))
        interval = self.notifier.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(self._watchdog(interval), name="watchdog"))
        self._ready = True
        self.notifier.send("READY=1", f"STATUS=serving on {self.host}:{self.port}")
        log.info("daemon_ready", listen=f"{self.host}:{self.port}", auth=bool(self.token))

    def _sighup(self) -> None:
        task = asyncio.ensure_future(self._reload_logged("sighup"))
        self._tasks.append(task)  # kept (and cancelled at shutdown)

    async def _reload_logged(self, reason: str) -> None:
        try:
            await self.reload_all(reason)
        except Exception as e:
            self.reload_failures.inc()
            log.error("reload_failed", reason=reason, error=type(e).__name__)

    async def _watchdog(self, interval: float) -> None:
        # pinged from the event loop: a blocked loop misses pings and systemd restarts us
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def shutdown(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=draining")
        log.info("daemon_stopping")
        self._stop.set()
        await self.manager.close(drain=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self.notifier.close()
        log.info("daemon_stopped")

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        try:  # a start that fails (its port taken) still stops the runs it resumed
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()
        return 0


def _loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (a name is looked
    up: ``127.attacker.example`` is not loopback; an unknown name is not either)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)
