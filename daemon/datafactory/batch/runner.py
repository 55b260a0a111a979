"""Batch mode: a window of simulated history, cut into partitions, written in parallel.

A partition is (shard, day). Shards are independent parts of the population, so they run in
parallel (worker processes, or tasks on a Dask cluster); the days of one shard run in order,
because state carries over. A partition's files are written (create-only), then the ledger
records it; a rerun of the same batch (same config, window and output: the same batch id)
skips the recorded partitions' writes. Days of a shard before its first unfinished one are
simulated again to rebuild the state (packs keep no state on disk), not written again.

The output is a function of (config, seed, window, shards, format): the worker count and the
engine change only how fast it arrives.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from datafactory.batch.output import (
    CONTENT_TYPE,
    FileFormat,
    FileInfo,
    partition_of,
    resolve_compression,
)
from datafactory.batch.simulate import Chunk, ShardSimulation, StateError, day_chunks
from datafactory.batch.targets import open_target, sha256
from datafactory.batch.write import DayWriter
from datafactory.chaos.manifest import fault_rows
from datafactory.config import BatchSection, Config, load_config, shard_problems
from datafactory.control.ledger import open_ledger
from datafactory.pack import Shard

GROUND_TRUTH = "_ground_truth"
# batch settings that change how fast or through which endpoint, not what is written
NOT_IDENTITY = ("workers", "endpoint_url")
log = structlog.get_logger("datafactory.batch")


class BatchError(Exception):
    """The batch cannot run as asked (said before anything is written)."""


@dataclass(frozen=True)
class BatchJob:
    """Everything a worker needs, picklable: it loads the config itself."""

    config_path: str
    overrides: dict[str, Any]
    start_us: int
    end_us: int
    batch_id: str
    ledger_url: str
    spec: dict[str, Any] = field(default_factory=dict)

    def section(self) -> BatchSection:
        return BatchSection.model_validate(self.spec)


def window(start: str, end: str) -> tuple[int, int]:
    """``--start``/``--end`` as epoch microseconds; a date-only end is inclusive (the whole
    day), a date-time end exclusive."""

    def parse(text: str) -> tuple[dt.datetime, bool]:
        try:
            d = dt.date.fromisoformat(text)
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC), True
        except ValueError:
            pass
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)), False

    try:
        a, _ = parse(start)
        b, date_only = parse(end)
    except ValueError as e:
        raise BatchError(f"--start/--end: {e} (use YYYY-MM-DD or an ISO 8601 time)") from None
    if date_only:
        b += dt.timedelta(days=1)
    if b <= a:
        raise BatchError(f"--end ({end}) must be after --start ({start})")
    return int(a.timestamp()) * 1_000_000, int(b.timestamp()) * 1_000_000


def prepare(
    config_path: str,
    start: str,
    end: str,
    batch: dict[str, Any] | None = None,
    seed: int | None = None,
    ledger_url: str = "sqlite:///./.datafactory/ledger.db",
) -> tuple[BatchJob, Config]:
    """Validate everything up front; the job the workers run."""
    start_us, end_us = window(start, end)
    overrides: dict[str, Any] = {
        "run": {
            "clock": "simulated",
            "start": dt.datetime.fromtimestamp(start_us / 1e6, dt.UTC).isoformat(),
            "duration": (end_us - start_us) / 1e6,
        }
    }
    if seed is not None:
        overrides["run"]["seed"] = seed
    if batch:
        overrides["batch"] = batch
    config = load_config(config_path, overrides)  # ConfigError: file, line, key, what
    spec = config.model.batch
    for problem in shard_problems(spec.shards, config.pack_params, config.streams):
        raise BatchError(f"{problem}; lower --shards / batch.shards")
    try:
        compression = resolve_compression(spec.format, spec.compression)
    except ValueError as e:
        raise BatchError(f"batch.compression: {e}") from None
    spec = spec.model_copy(update={"compression": compression})
    # the data's identity: what it contains and where it goes, not how fast
    identity = {
        "packs": config.model.model_dump(mode="json")["packs"],
        "seed": config.run.seed,
        "block_size": config.model.engine.block_size,
        "window": [start_us, end_us],
        "batch": spec.model_dump(mode="json", exclude=set(NOT_IDENTITY)),
    }
    batch_id = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()
    job = BatchJob(
        config_path, overrides, start_us, end_us, batch_id[:20], ledger_url,
        spec.model_dump(mode="json"),
    )  # fmt: skip
    return job, config


# -- one shard (a worker's task) ---------------------------------------------------------------


def run_shard(job: BatchJob, index: int) -> dict[str, Any]:
    """Worker entry point (process pool or Dask task): one shard, every day in order."""
    return asyncio.run(_run_shard(job, index))


async def _run_shard(job: BatchJob, index: int) -> dict[str, Any]:
    spec = job.section()
    config = load_config(job.config_path, job.overrides)
    shard = Shard(index, spec.shards)
    target = open_target(spec.out, spec.part_size, spec.endpoint_url, spec.region)
    ledger = open_ledger(job.ledger_url)
    await target.open()
    await ledger.open()
    stats: dict[str, Any] = {
        "shard": index, "rows": 0, "bytes": 0, "files": 0, "existing": 0, "replayed": 0,
        "restored_from": -1, "state": "",
    }  # fmt: skip
    try:
        finished = await ledger.batch_partitions(job.batch_id, index)
        done = {int(r[1]) for r in finished}
        sim = ShardSimulation(config, shard, job.start_us, job.end_us)
        first = await _restore(sim, target, finished)
        stats["restored_from"] = first - 1
        days = day_chunks(job.start_us, job.end_us)
        formats = {
            s.event_type: FileFormat(
                s.schema,
                spec.format,
                spec.compression,
                config.run.seed,
                spec.row_group_rows,
            )
            for s in config.streams
        }
        for chunk in sim.chunks(first):
            last = chunk.index == len(days) - 1
            if chunk.index in done:
                stats["replayed"] += 1
                continue
            out = DayWriter(target, formats, index, spec.partition, spec.file_rows, spec.format)
            try:
                for block in chunk.blocks:
                    await out.add(block)
                    await out.passed(chunk.done_us)
                files = await out.finish()
            except BaseException:
                await out.abort()
                raise
            stats["existing"] += out.existing
            if chunk.labels.items:
                files.append(await _ground_truth(target, chunk, index, config))
            state_key = ""
            if last or (chunk.index + 1) % spec.checkpoint_days == 0:
                state_key = state_key_for(job.batch_id, index, chunk.index)
                await target.put_state(state_key, sim.state(chunk))
            rows = sum(f.rows for f in files if f.stream != GROUND_TRUTH)
            nbytes = sum(f.bytes for f in files)
            await ledger.batch_partition_done(
                job.batch_id, index, chunk.index, rows, nbytes,
                json.dumps([f.as_dict() for f in files]), state_key,
            )  # fmt: skip
            stats["rows"] += rows
            stats["bytes"] += nbytes
            stats["files"] += len(files)
        stats["state"] = state_key_for(job.batch_id, index, len(days) - 1)
    finally:
        await ledger.close()
        await target.close()
    return stats


def state_key_for(batch_id: str, shard: int, chunk: int) -> str:
    """Where a shard's state after day ``chunk`` is saved (beside the data; ``_`` paths are
    not data to Hive-style readers)."""
    return f"_state/{batch_id}/shard-{shard:04d}/day-{chunk:06d}.pkl"


async def _restore(sim: ShardSimulation, target: Any, finished: list[tuple[Any, ...]]) -> int:
    """Continue from the last saved state among the finished days (the day to start at):
    a shard's days finish in order, so the days before it are all written. Without one
    (or with one this build cannot load), from the start: days are simulated again, not
    written again."""
    done = sorted(int(r[1]) for r in finished)
    prefix = 0
    while prefix < len(done) and done[prefix] == prefix:
        prefix += 1
    states = sorted((int(r[1]), str(r[4])) for r in finished if r[4] and int(r[1]) < prefix)
    for _chunk, key in reversed(states):
        data = await target.read(key)
        if data is None:
            continue
        try:
            return sim.restore(data)
        except StateError as e:
            log.warning("batch_state_unusable", key=key, error=str(e))
            break
    return 0


async def _ground_truth(target: Any, chunk: Chunk, shard: int, config: Config) -> FileInfo:
    """The packs' labelled records of the day (record, error kind, field), JSON lines in the
    chaos manifest's shape (``schemas/chaos/manifest.avsc``, step ``domain``), as a stream
    run writes them."""
    rows = [r for f in chunk.labels.items for r in fault_rows(f, config.run.name, config.run.seed)]
    rows.sort(key=lambda r: (r["stream"], r["seq"], r["kind"]))
    data = b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in rows)
    part = partition_of(chunk.start_us, "day")
    key = f"stream={GROUND_TRUTH}/{part}/part-{shard:04d}-{chunk.index:06d}.jsonl"
    digest = sha256(data)
    await target.put(key, data, digest, CONTENT_TYPE["jsonl"])
    return FileInfo(key, GROUND_TRUTH, len(rows), len(data), digest, 0, 0)


# -- the whole batch ----------------------------------------------------------------------------


@dataclass
class Progress:
    """Finished partitions, rows and bytes, read from the ledger (what every worker wrote),
    for the progress bar and the metrics."""

    total: int
    done: int = 0
    rows: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        return self.rows / max(time.monotonic() - self.started, 1e-9)


class _Watcher:
    def __init__(self, job: BatchJob, progress: Progress, bar: bool, metrics: Any) -> None:
        self.job, self.progress, self.metrics = job, progress, metrics
        self._stop = threading.Event()
        self._bar: Any = None
        if bar:
            from tqdm import tqdm

            # a terminal that reports no size (a pty nobody sized) would get no bar at all
            size = shutil.get_terminal_size((100, 20))
            self._bar = tqdm(
                total=progress.total,
                unit="part",
                ncols=size.columns if size.columns > 20 else 100,
                nrows=size.lines if size.lines > 2 else 20,
            )
        self._thread = threading.Thread(target=self._loop, name="batch-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        loop = asyncio.new_event_loop()
        ledger = open_ledger(self.job.ledger_url)
        loop.run_until_complete(ledger.open())
        try:
            while True:
                stopping = self._stop.wait(0.5)
                rows = loop.run_until_complete(ledger.batch_partitions(self.job.batch_id))
                self._update(rows)
                if stopping:
                    break
        finally:
            loop.run_until_complete(ledger.close())
            loop.close()

    def _update(self, rows: list[tuple[Any, ...]]) -> None:
        p = self.progress
        before = p.done
        p.done = len(rows)
        p.rows = sum(int(r[2]) for r in rows)
        p.bytes = sum(int(r[3]) for r in rows)
        if self.metrics is not None:
            self.metrics.update(p)
        if self._bar is not None:
            self._bar.update(p.done - before)
            self._bar.set_postfix_str(f"{p.rows:,} rows, {p.rate():,.0f} rows/s, {_mib(p.bytes)}")


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.1f} MiB"


class BatchMetrics:
    """Prometheus gauges of a batch run, served on ``listen`` (host:port) if given."""

    def __init__(self, listen: str | None) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.total = Gauge("datafactory_batch_partitions_total", "Partitions in the batch",
                           registry=self.registry)  # fmt: skip
        self.done = Gauge("datafactory_batch_partitions_done", "Partitions written",
                          registry=self.registry)  # fmt: skip
        self.rows = Gauge("datafactory_batch_rows_written", "Rows written",
                          registry=self.registry)  # fmt: skip
        self.bytes = Gauge("datafactory_batch_bytes_written", "Bytes written",
                           registry=self.registry)  # fmt: skip
        self.rate = Gauge("datafactory_batch_rows_per_second", "Rows written per second",
                          registry=self.registry)  # fmt: skip
        self.server: Any = None
        if listen:
            host, _, port = listen.rpartition(":")
            self.server, _ = start_http_server(int(port), host, registry=self.registry)

    def update(self, p: Progress) -> None:
        self.total.set(p.total)
        self.done.set(p.done)
        self.rows.set(p.rows)
        self.bytes.set(p.bytes)
        self.rate.set(p.rate())

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def run_batch(
    job: BatchJob,
    config: Config,
    *,
    engine: str = "local",
    scheduler: str | None = None,
    bar: bool = False,
    metrics_listen: str | None = None,
) -> dict[str, Any]:
    spec = job.section()
    days = day_chunks(job.start_us, job.end_us)
    progress = Progress(total=spec.shards * len(days))
    aborted = asyncio.run(_prepare(spec, job.ledger_url))
    metrics = BatchMetrics(metrics_listen)
    watcher = _Watcher(job, progress, bar, metrics)
    watcher.start()
    started = time.monotonic()
    try:
        shards = list(range(spec.shards))
        if engine == "dask":
            results = _run_dask(job, shards, scheduler)
        elif spec.workers == 1:
            results = [run_shard(job, i) for i in shards]
        else:
            results = _run_processes(job, shards, spec.workers)
    finally:
        watcher.stop()
        metrics.close()
    elapsed = time.monotonic() - started
    manifest = asyncio.run(_write_manifest(job, config, spec))
    return {
        "batch_id": job.batch_id,
        "out": spec.out,
        "partitions": progress.total,
        "rows": manifest["totals"]["rows"],
        "files": len(manifest["files"]),
        "bytes": manifest["totals"]["bytes"],
        "written_now": {k: sum(r[k] for r in results) for k in ("rows", "files", "existing")},
        "replayed_partitions": sum(r["replayed"] for r in results),
        "restored_from_day": [r["restored_from"] for r in results],
        # where each shard's state at the end was saved: `datafactory run --from-state`
        "final_states": [r["state"] for r in results],
        "aborted_uploads": aborted,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(sum(r["rows"] for r in results) / max(elapsed, 1e-9)),
        "manifest": manifest["key"],
    }


async def _prepare(spec: BatchSection, ledger_url: str, abort: bool = True) -> int:
    """Before any worker starts: the ledger's tables (and WAL) created, the bucket in place,
    and (``abort``) what killed writers left removed (temp files, open multipart uploads; how
    many). A shard run on its own (``--shard``) does not abort: others may be uploading."""
    ledger = open_ledger(ledger_url)
    await ledger.open()
    await ledger.close()
    target = open_target(spec.out, spec.part_size, spec.endpoint_url, spec.region)
    await target.open()
    try:
        if hasattr(target, "ensure_bucket"):
            await target.ensure_bucket()
        return int(await target.abort_incomplete()) if abort else 0
    finally:
        await target.close()


def _run_processes(job: BatchJob, shards: list[int], workers: int) -> list[dict[str, Any]]:
    from datafactory.batch.processes import in_processes

    return list(in_processes(run_shard, [(job, s) for s in shards], workers))


def _run_dask(job: BatchJob, shards: list[int], scheduler: str | None) -> list[dict[str, Any]]:
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover - an optional dependency
        raise BatchError(
            "--engine dask needs dask.distributed: pip install 'datafactory[dask]'"
        ) from e
    if not scheduler:
        raise BatchError("--engine dask needs --scheduler tcp://HOST:PORT")
    with Client(scheduler) as client:  # type: ignore[no-untyped-call]
        futures = client.map(run_shard, [job] * len(shards), shards, pure=False)
        return list(client.gather(futures))


async def _write_manifest(job: BatchJob, config: Config, spec: BatchSection) -> dict[str, Any]:
    """Files, row counts, checksums and schema versions of the whole batch, from the ledger;
    deterministic (no wall times), so a rerun finds it identical."""
    ledger = open_ledger(job.ledger_url)
    await ledger.open()
    try:
        rows = await ledger.batch_partitions(job.batch_id, with_files=True)
    finally:
        await ledger.close()
    files = sorted((f for r in rows for f in json.loads(r[5])), key=lambda f: f["key"])
    days = day_chunks(job.start_us, job.end_us)
    totals: dict[str, Any] = {"rows": 0, "bytes": 0, "streams": {}}
    for f in files:
        s = totals["streams"].setdefault(f["stream"], {"rows": 0, "bytes": 0, "files": 0})
        s["rows"] += f["rows"]
        s["bytes"] += f["bytes"]
        s["files"] += 1
        if f["stream"] != GROUND_TRUTH:
            totals["rows"] += f["rows"]
        totals["bytes"] += f["bytes"]
    schemas = {s.event_type: s.schema.fingerprint.hex() for s in config.streams}
    key = f"_manifests/{job.batch_id}.json"
    manifest = {
        "batch_id": job.batch_id,
        "seed": config.run.seed,
        "start": dt.datetime.fromtimestamp(job.start_us / 1e6, dt.UTC).isoformat(),
        "end": dt.datetime.fromtimestamp(job.end_us / 1e6, dt.UTC).isoformat(),
        "spec": {k: v for k, v in job.spec.items() if k not in NOT_IDENTITY},
        "partitions": {
            "shards": spec.shards,
            "days": len(day_chunks(job.start_us, job.end_us)),
            "finished": len(rows),
        },
        "schemas": schemas,
        # each shard's state at the end (pickled; this build only): a stream run continues
        # from it with `datafactory run CONFIG --from-state <out>/<key>`
        "states": [state_key_for(job.batch_id, k, len(days) - 1) for k in range(spec.shards)],
        "totals": totals,
        "files": files,
        "key": key,
    }
    data = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    target = open_target(spec.out, spec.part_size, spec.endpoint_url, spec.region)
    await target.open()
    try:
        await target.put(key, data, sha256(data), "application/json")
    finally:
        await target.close()
    return manifest
