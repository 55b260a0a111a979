"""``datafactory``: run, validate, packs, sample."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from datafactory import __version__
from datafactory.config import Config, ConfigError, load_config
from datafactory.units import parse_duration

EXIT_CONFIG = 2
_BACKGROUND: set[asyncio.Future[None]] = set()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="datafactory",
        description="Simulated businesses streaming realistic, labelled events.",
    )
    p.add_argument("--version", action="version", version=f"datafactory {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a scenario until its streams end (or Ctrl-C)")
    r.add_argument("config", help="scenario YAML file")
    r.add_argument("--seed", type=int, help="override run.seed")
    r.add_argument("--duration", help="override run.duration (e.g. 30s, 10m)")
    r.add_argument("--no-progress", action="store_true", help="no live events/s line on a TTY")
    r.add_argument(
        "--json",
        action="store_true",
        help="print the run's account at exit as JSON on stdout (on stderr when a stdout sink "
        "writes the events there); without it: text on a terminal, else a run_account log line",
    )
    r.add_argument("--shards", type=int, help="override run.shards: parts of the population")
    r.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes to run the shards in (one event loop each; at most the shards)",
    )
    r.add_argument(
        "--from-state",
        metavar="PATH",
        help="override run.from_state: continue a batch's history from a shard's saved state "
        "(file or s3://bucket/key, as the batch's manifest lists it)",
    )

    b = sub.add_parser(
        "batch",
        help="write a window of simulated history as partitioned files (local or S3)",
        description="Runs the packs' behaviour from --start to --end as fast as the machine "
        "allows and writes Hive-partitioned Parquet, JSON lines or Avro files. Reruns of the "
        "same batch resume: finished partitions are not written again. Options override the "
        "config's batch section.",
    )
    b.add_argument("config", help="scenario YAML file (its packs and streams)")
    b.add_argument("--start", required=True, help="first day (YYYY-MM-DD) or ISO 8601 time")
    b.add_argument("--end", required=True, help="last day, inclusive (or an exclusive time)")
    b.add_argument("--out", help="directory or s3://bucket/prefix")
    b.add_argument("--format", choices=["parquet", "jsonl", "avro"])
    b.add_argument("--compression", choices=["zstd", "snappy", "gzip", "none"])
    b.add_argument("--partition", choices=["day", "hour"], help="Hive partitions by day or hour")
    b.add_argument("--shards", type=int, help="parts of the population (part of the output)")
    b.add_argument("--workers", type=int, help="worker processes (local engine)")
    b.add_argument("--engine", choices=["local", "dask"], default="local")
    b.add_argument("--scheduler", help="Dask scheduler address (tcp://host:port)")
    b.add_argument("--endpoint-url", help="S3 endpoint (moto, MinIO...)")
    b.add_argument("--seed", type=int, help="override run.seed")
    b.add_argument(
        "--ledger",
        default=os.environ.get("DATAFACTORY_LEDGER", "sqlite:///./.datafactory/ledger.db"),
        help="where finished partitions are recorded (sqlite:///PATH or postgresql://...; "
        "$DATAFACTORY_LEDGER); steps run apart share one",
    )
    b.add_argument("--metrics", help="serve progress as Prometheus metrics on host:port")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on a TTY")
    step = b.add_mutually_exclusive_group()
    step.add_argument(
        "--shard",
        type=int,
        metavar="K",
        help="write only shard K (a step run apart; then --finish)",
    )
    step.add_argument(
        "--finish",
        action="store_true",
        help="write the manifest of a batch whose shards were written by --shard steps",
    )
    step.add_argument(
        "--plan",
        choices=["sfn"],
        help="print the AWS Step Functions execution input that runs this batch as steps",
    )
    b.add_argument(
        "--task-config",
        help="with --plan: the config's path inside the task (default: "
        "/etc/datafactory/configs/ and its file name)",
    )

    v = sub.add_parser("validate", help="check a scenario file; exit 2 listing every problem")
    v.add_argument("config")

    k = sub.add_parser("packs", help="installed packs, their streams, schemas and parameters")
    k.add_argument("--json", action="store_true", help="machine-readable output")

    t = sub.add_parser("tail", help="print events as they arrive in a topic or stream")
    t.add_argument("url", help="kafka://TOPIC or kinesis://STREAM")
    t.add_argument("-n", type=int, default=None, help="stop after this many")
    t.add_argument("--bootstrap", help="Kafka host:port (default: the local stand-in)")
    t.add_argument("--endpoint", help="Kinesis endpoint URL (default: the local stand-in)")
    t.add_argument("--from-beginning", action="store_true", help="not just new events")
    t.add_argument(
        "--config", help="a scenario file: its streams' schemas decode too (a template's)"
    )

    sub.add_parser(
        "reap",
        help="delete topics/streams/buckets whose ttl has passed (recorded in the state dir, "
        "$DATAFACTORY_STATE_DIR or ./.datafactory)",
    )

    d = sub.add_parser(
        "serve",
        help="the daemon: admin API, console, ledger, runs from named configs (see --help)",
    )
    d.add_argument(
        "--listen",
        default=os.environ.get("DATAFACTORY_LISTEN", "127.0.0.1:9400"),
        help="host:port of the API and console ($DATAFACTORY_LISTEN; default 127.0.0.1:9400)",
    )
    d.add_argument(
        "--ledger",
        default=os.environ.get("DATAFACTORY_LEDGER", "sqlite:///./.datafactory/ledger.db"),
        help="sqlite:///PATH or postgresql://... ($DATAFACTORY_LEDGER)",
    )
    d.add_argument(
        "--configs",
        default=os.environ.get("DATAFACTORY_CONFIGS"),
        help="folder of named configs NAME.yaml, watched for changes ($DATAFACTORY_CONFIGS)",
    )
    d.add_argument(
        "--run",
        action="append",
        default=[c for c in os.environ.get("DATAFACTORY_RUN", "").split(",") if c],
        help="start this named config at startup unless a run of it is live ($DATAFACTORY_RUN)",
    )
    d.add_argument(
        "--token-file",
        default=os.environ.get("DATAFACTORY_TOKEN_FILE"),
        help="file holding the bearer token for mutating calls (else $DATAFACTORY_TOKEN)",
    )
    d.add_argument(
        "--owner",
        default=os.environ.get("DATAFACTORY_OWNER", socket.gethostname()),
        help="this daemon's name in a shared ledger (resumes only its own runs)",
    )
    d.add_argument("--no-watch", action="store_true", help="reload only on SIGHUP or the API")
    d.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("DATAFACTORY_WORKERS", "1")),
        help="worker processes for the shards of a sharded run (run.shards; one event loop "
        "each; $DATAFACTORY_WORKERS; default 1: in the daemon's own loop)",
    )
    d.add_argument(
        "--data-root",
        default=os.environ.get("DATAFACTORY_DATA_ROOT", "data"),
        help="where file sinks of runs sent over the API may write ($DATAFACTORY_DATA_ROOT; "
        "default ./data; named configs are the operator's and may write anywhere)",
    )
    d.add_argument(
        "--states",
        action="append",
        default=[],
        metavar="DIR|s3://BUCKET/PREFIX",
        help="where runs may read run.from_state from (repeatable; also "
        "$DATAFACTORY_STATE_PATHS; the state folder always)",
    )
    d.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    f = sub.add_parser(
        "verify",
        help="read back a run's output (and a platform's DLQ / accepted output) and account "
        "for every event against the chaos manifest; exit 1 when a threshold is missed",
    )
    f.add_argument("config", help="the scenario YAML the run used")
    f.add_argument("--manifest", help="manifest source URI (default: the config's manifest)")
    f.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="SINK=URI",
        help="read this sink's output from URI (path, file://, kafka://host:port/topic, "
        "s3://bucket/prefix?endpoint=..., kinesis://stream?endpoint=...); {stream} in URI "
        "is replaced by each stream's name",
    )
    f.add_argument("--sink", action="append", help="check only these sinks (default: all)")
    f.add_argument("--dlq", metavar="URI", help="the platform's dead-letter queue")
    f.add_argument("--accepted", metavar="URI", help="what the platform accepted")
    f.add_argument(
        "--quiet",
        type=float,
        default=3.0,
        help="a topic/stream is read to its end "
        "once nothing arrived for this many seconds (default 3)",
    )
    f.add_argument("--json", action="store_true", help="print the report as JSON")
    f.add_argument("--max-missing", type=int, default=0, help="missing events allowed (0)")
    f.add_argument("--max-duplicated", type=int, default=0, help="unintended duplicates allowed")
    f.add_argument("--max-unidentified", type=int, default=0, help="unnamed messages allowed")
    f.add_argument(
        "--min-recall",
        action="append",
        default=[],
        metavar="[FAULT=]R",
        help="DLQ recall at least R, overall or for one fault (e.g. schema_drift=0.99)",
    )
    f.add_argument("--min-precision", type=float, help="DLQ precision at least this")
    f.add_argument("--max-false-positives", type=int, help="clean events in the DLQ allowed")
    f.add_argument(
        "--expected",
        metavar="DIR",
        help="the answers datafactory expect wrote: check the platform's numbers against them "
        "(instead of its events)",
    )
    f.add_argument(
        "--actual",
        metavar="SOURCE",
        help="the platform's result tables, one per question: a folder of .parquet/.jsonl, "
        "duckdb:///path.db or postgresql://...",
    )
    f.add_argument("--question", action="append", help="check only these (with --expected)")
    f.add_argument("--tolerance", default="0", help="a measure may be off by this much (0)")
    f.add_argument("--max-wrong-windows", type=int, default=0, help="windows allowed wrong (0)")

    s = sub.add_parser("sample", help="print a few events of one stream")
    s.add_argument("stream", help="PACK.STREAM, e.g. retail.pos_transaction")
    s.add_argument("-n", type=int, default=5, help="how many events (default 5)")
    s.add_argument("--format", choices=["json", "avro"], default="json")
    s.add_argument("--seed", type=int, default=None, help="(default: the scenario's, else 0)")
    s.add_argument("--config", help="a scenario file: its pack params (a template's streams)")

    i = sub.add_parser(
        "infer", help="draft a template from example records (JSON lines, Avro, Parquet)"
    )
    i.add_argument(
        "sample", nargs="+", help="files of records (.jsonl / .json, .avro, .parquet): a stream "
        "each, named by the file; keys of one that another refers to become entities"
    )  # fmt: skip
    i.add_argument("--stream", help="the drafted stream's name (one sample)")
    i.add_argument("-o", "--out", help="write the draft here (default: print it)")
    i.add_argument("--limit", type=int, default=100_000, help="records read at most")
    i.add_argument(
        "--report", action="store_true", help="also compare what the draft makes with the sample"
    )

    e = sub.add_parser(
        "expect",
        help="the answers a platform's numbers must match (revenue per store per hour...)",
        description="Makes the run's (or, with --start/--end, the batch's) events again as "
        "the business produced them, before chaos, and answers the questions its packs "
        "declare: one table per question.",
    )
    e.add_argument("config", help="the scenario file of the run or batch")
    e.add_argument("--start", help="a batch's first day (YYYY-MM-DD) or ISO 8601 time")
    e.add_argument("--end", help="a batch's last day, inclusive (or an exclusive time)")
    e.add_argument("--shards", type=int, help="as the run or batch was split (default: its)")
    e.add_argument(
        "--workers",
        type=int,
        help="processes the shards are made and answered in, as batch mode's (default: the "
        "config's batch.workers); the answer is the same whatever the workers",
    )
    e.add_argument("--question", action="append", help="only these (default: every one)")
    e.add_argument(
        "--manifest",
        help="the run's chaos manifest (default: its config's, when it has chaos): what a "
        "platform never saw, must reject, or got twice",
    )
    e.add_argument(
        "--watermark-lag",
        type=float,
        help="the platform's lateness policy: its watermark trails the latest event time by "
        "this many seconds...",
    )
    e.add_argument(
        "--allowed-lateness",
        type=float,
        help="...and a window takes events this many seconds after the watermark passed its "
        "end (later ones are dropped: expect leaves them out and names them)",
    )
    e.add_argument("--out", default="expected", help="folder for the tables (default: expected)")
    e.add_argument("--format", choices=["parquet", "json"], default="parquet")
    e.add_argument(
        "--emit",
        action="append",
        choices=["dbt", "soda"],
        help="also checks for the tools platforms run: a dbt package (OUT/dbt: the answers as "
        "seeds, tests comparing your models with them) or SodaCL checks (OUT/soda/<stream>.yml)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "run": _run,
        "validate": _validate,
        "packs": _packs,
        "sample": _sample,
        "tail": _tail,
        "reap": _reap,
        "verify": _verify,
        "serve": _serve,
        "batch": _batch,
        "infer": _infer,
        "expect": _expect,
    }
    return int(handler[args.command](args))


def _load(path: str, overrides: dict[str, Any] | None = None) -> Config | None:
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        print(f"datafactory: {e}", file=sys.stderr)
        return None


def _batch(args: argparse.Namespace) -> int:
    import orjson

    from datafactory.batch import steps
    from datafactory.batch.runner import BatchError, prepare, run_batch

    keys = ("out", "format", "compression", "partition", "shards", "workers")
    batch = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.endpoint_url:
        batch["endpoint_url"] = args.endpoint_url
    try:
        job, cfg = prepare(args.config, args.start, args.end, batch, args.seed, args.ledger)
        if args.plan is not None:
            summary = steps.sfn_input(job, args.config, args.start, args.end, args.task_config)
        elif args.shard is not None:
            summary = steps.one_shard(job, args.shard)
        elif args.finish:
            summary = steps.finish(job, cfg)
        else:
            summary = run_batch(
                job,
                cfg,
                engine=args.engine,
                scheduler=args.scheduler,
                bar=sys.stderr.isatty() and not args.no_progress,
                metrics_listen=args.metrics,
            )
    except ConfigError as e:
        print(f"datafactory: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except BatchError as e:
        print(f"datafactory batch: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as e:  # a pack or a target failed: finished partitions stay recorded
        print(f"datafactory batch: failed: {e} (rerun the same command to resume)", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0


def _validate(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_CONFIG
    streams = ", ".join(f"{s.event_type} -> {'/'.join(s.sinks)}" for s in cfg.streams)
    print(f"{args.config}: ok ({len(cfg.streams)} streams: {streams})")
    return 0


def _run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides.setdefault("run", {})["seed"] = args.seed
    if args.duration is not None:
        try:
            overrides.setdefault("run", {})["duration"] = parse_duration(args.duration)
        except ValueError as e:
            print(f"datafactory: --duration: {e}", file=sys.stderr)
            return EXIT_CONFIG
    if args.from_state is not None:
        overrides.setdefault("run", {})["from_state"] = args.from_state
    if args.shards is not None:
        overrides.setdefault("run", {})["shards"] = args.shards
    cfg = _load(args.config, overrides)
    if cfg is None:
        return EXIT_CONFIG
    if not 1 <= args.workers <= cfg.run.shards:
        print(
            f"datafactory: --workers {args.workers}: a run of {cfg.run.shards} shard(s) runs "
            f"in 1 to {cfg.run.shards} worker processes (more shards: run.shards / --shards)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    state = None
    if cfg.run.from_state:
        from datafactory.batch.simulate import StateError, load_run_state

        try:
            state = asyncio.run(load_run_state(cfg))
        except StateError as e:  # unreadable, another build, another config: say which
            print(f"datafactory: {e}", file=sys.stderr)
            return EXIT_CONFIG
    from datafactory.logs import configure_logging

    configure_logging(cfg.model.log.level, cfg.model.log.format)
    progress = sys.stderr.isatty() and not args.no_progress
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep a fallback
        runner = asyncio.run
    return int(
        runner(_serve_run(cfg, progress, args.config, overrides, state, args.json, args.workers))
    )


def _reload(engine: Any, path: str, overrides: dict[str, Any]) -> None:
    """SIGHUP: re-read the config file; apply chaos and rate changes live. A bad file is
    rejected with every problem logged, and the run goes on as it was."""
    import structlog

    logger = structlog.get_logger("datafactory")
    try:
        new = load_config(path, overrides)
    except ConfigError as e:
        logger.error("reload_rejected", error=str(e))
        return

    async def apply() -> None:
        result = await engine.reload(new)
        logger.info("reload_applied", **result)

    task = asyncio.ensure_future(apply())
    _BACKGROUND.add(task)  # keep a reference until it is done
    task.add_done_callback(_BACKGROUND.discard)


async def _serve_run(
    cfg: Config,
    progress: bool,
    path: str | None = None,
    overrides: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    as_json: bool = False,
    workers: int = 1,
) -> int:
    from datafactory.runtime.engine import Engine
    from datafactory.runtime.shards import Shards
    from datafactory.telemetry.server import TelemetryServer

    engine: Engine | Shards = (
        Shards(cfg, workers=workers) if cfg.run.shards > 1 else Engine(cfg, state=state)
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, engine.stop)
    if path is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, engine, path, overrides or {})
    server = None
    if cfg.model.telemetry.enabled:
        server = TelemetryServer(
            engine.metrics.registry,
            cfg.model.telemetry.listen,
            lambda: {"status": "ok", **engine.snapshot()},
        )
        await server.start()
    ticker = asyncio.create_task(_progress(engine)) if progress else None
    started = time.monotonic()
    try:
        summary = await engine.run()
    except Exception as e:  # a failed start or a broken sink: say what, no traceback
        import structlog

        structlog.get_logger("datafactory").error("run_failed", error=str(e))
        print(f"datafactory: run failed: {e}", file=sys.stderr)
        return 1
    finally:
        if ticker:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            sys.stderr.write("\n")
        if server:
            await server.stop()
    _print_account(cfg, summary, time.monotonic() - started, as_json)
    failed = sum(sum(s["failed"].values()) for s in summary["sinks"].values())
    return 1 if failed > summary.get("failed_intentionally", 0) else 0


def _print_account(cfg: Config, summary: dict[str, Any], seconds: float, as_json: bool) -> None:
    """What the run made and every sink did with it, once it ended (``--json``: a document)."""
    import orjson

    from datafactory.runtime.report import account, render

    acc = account(cfg, summary, seconds)
    if as_json:
        events_on_stdout = any(k.type == "stdout" for k in cfg.sinks.values())
        out = sys.stderr if events_on_stdout else sys.stdout
        out.write(orjson.dumps(acc, option=orjson.OPT_INDENT_2).decode() + "\n")
        out.flush()
    elif sys.stderr.isatty():
        sys.stderr.write(render(acc) + "\n")
    else:
        import structlog

        structlog.get_logger("datafactory").info("run_account", **acc)


async def _progress(engine: Any) -> None:
    start = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        snap = engine.snapshot()["streams"]
        parts = [
            f"{name}: {v['rate']:,.0f}/s (target {v['target_rate']:,.0f}) total {v['released']:,}"
            for name, v in snap.items()
        ]
        sys.stderr.write(f"\r[{time.monotonic() - start:6.0f}s] " + " | ".join(parts) + "\033[K")
        sys.stderr.flush()


def _serve(args: argparse.Namespace) -> int:
    from datafactory.control.daemon import Daemon
    from datafactory.logs import configure_logging

    configure_logging(args.log_level, "json")
    token = os.environ.get("DATAFACTORY_TOKEN") or None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip() or None
        except OSError as e:
            print(f"datafactory: --token-file: {e.strerror}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        daemon = Daemon(
            listen=args.listen,
            ledger=args.ledger,
            token=token,
            configs=args.configs,
            autostart=args.run,
            owner=args.owner,
            watch=not args.no_watch,
            states=args.states,
            data_root=args.data_root,
            workers=args.workers,
        )
    except ValueError as e:
        print(f"datafactory: serve: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        return int(runner(daemon.serve()))
    except Exception as e:
        print(f"datafactory: serve failed: {e}", file=sys.stderr)
        return 1


def _verify(args: argparse.Namespace) -> int:
    from datafactory.verify import Thresholds, VerifyError, format_table, verify
    from datafactory.verify.sources import SourceError

    cfg = _load(args.config)
    if cfg is None:
        return EXIT_CONFIG
    if args.expected is not None:
        return _verify_expected(args)
    th = Thresholds(args.max_missing, args.max_duplicated, args.max_unidentified)
    try:
        for item in args.min_recall:
            kind, _, value = item.rpartition("=")
            th.min_recall[kind] = float(value)
        overrides = dict(item.split("=", 1) for item in args.source)
    except ValueError:
        print("datafactory: --min-recall takes [FAULT=]R, --source SINK=URI", file=sys.stderr)
        return EXIT_CONFIG
    th.min_precision = args.min_precision
    th.max_false_positives = args.max_false_positives
    try:
        report = asyncio.run(
            verify(
                cfg,
                manifest=args.manifest,
                source_overrides=overrides,
                only_sinks=args.sink,
                dlq=args.dlq,
                accepted=args.accepted,
                quiet=args.quiet,
                thresholds=th,
            )
        )
    except (VerifyError, SourceError, OSError) as e:
        print(f"datafactory: verify: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return _verdict(report, args.json, format_table)


def _verdict(report: dict[str, Any], as_json: bool, text: Callable[[Any], str]) -> int:
    """A verify report printed (JSON or text); exit 1 when it lists failures."""
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(text(report))
    return 1 if report["failures"] else 0


def _reap(args: argparse.Namespace) -> int:
    from datafactory.lifecycle.registry import ResourceRegistry, reap

    registry = ResourceRegistry()
    deleted = asyncio.run(reap(registry))
    for d in deleted:
        print(f"deleted {d}")
    left = registry.entries()
    print(f"{len(deleted)} deleted, {len(left)} still recorded in {registry.path}")
    return 0


def _tail(args: argparse.Namespace) -> int:
    from datafactory.tail import tail

    schemas = []
    if args.config:
        if (cfg := _load(args.config)) is None:
            return 2
        schemas = [p.schema for p in cfg.streams]
    try:
        return tail(args.url, args.bootstrap, args.endpoint, args.n, args.from_beginning, schemas)
    except KeyboardInterrupt:
        return 0


def _packs(args: argparse.Namespace) -> int:
    from pydantic_core import to_jsonable_python

    from datafactory.pack import registered_packs

    out: list[dict[str, Any]] = []
    for name, pack in sorted(registered_packs().items()):
        out.append(
            {
                "pack": name,
                "description": pack.description,
                "streams": [
                    {
                        "stream": s,
                        "event_type": spec.event_type(name),
                        "description": spec.description,
                        "default_rate": (
                            spec.default_rate.model_dump() if spec.default_rate else None
                        ),
                        "driven": spec.driven,
                    }
                    for s, spec in pack.streams.items()
                ],
                "params": {
                    k: {
                        "default": None
                        if f.is_required()
                        else to_jsonable_python(f.get_default(call_default_factory=True)),
                        "required": f.is_required(),
                        "description": f.description,
                    }
                    for k, f in pack.Params.model_fields.items()
                },
            }
        )
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return 0
    for p in out:
        print(f"{p['pack']}: {p['description']}")
        for s in p["streams"]:
            print(f"  stream {s['event_type']}  (schema schemas/{p['pack']}/{s['stream']}.avsc)")
            print(f"      {s['description']}")
        if not p["streams"]:
            print("  streams: the ones its params declare (see the README's Templates)")
        print("  params:")
        for k, v in p["params"].items():
            value = "(required)" if v["required"] else f"= {v['default']!r}"
            print(f"    {k} {value}  {v['description'] or ''}")
    return 0


def _sample_block(pack: Any, specs: dict[str, Any], stream: str, n: int, now: int) -> Any:
    """The first ``n`` events of one stream, driven like any run: a paced stream over the last
    ``n`` seconds; a driven one from its pack's paced streams (64 events an hour each), an
    hour at a time, for a simulated month at most. None: nothing happened."""
    from datafactory.config import StreamPlan
    from datafactory.engine.blocks import concat
    from datafactory.engine.rate import ConstantProfile
    from datafactory.runtime.drive import Driver

    driver = Driver({pack.name: pack}, 8192)
    hour = 3_600_000_000
    if not specs[stream].driven:
        start = now - n * 1_000_000
        plan = StreamPlan(pack.name, stream, ConstantProfile(base=1.0), (), None)
        driver.add(plan, t0=start / 1e6)
        return concat(driver.paced(plan.event_type, start, now, end=True))  # exactly n
    for name, spec in specs.items():
        if not spec.driven:
            rate = ConstantProfile(base=64 / 3600)
            driver.add(StreamPlan(pack.name, name, rate, (), None), t0=(now - 720 * hour) / 1e6)
    plan = StreamPlan(pack.name, stream, ConstantProfile(base=0), (), None, True)
    lane = driver.add(plan, t0=now / 1e6)
    got: list[Any] = []
    t = now - 720 * hour
    pack.begin(t)  # its models begin with the window, as a run's do
    while t < now and sum(map(len, got)) < n:
        got += [b for b in driver.step(t, t + hour) if b.stream == lane.name]
        t += hour
    return concat(got).take(slice(0, n)) if got else None


def _sample(args: argparse.Namespace) -> int:
    from datafactory.encoders import build_encoder
    from datafactory.engine.seeding import SeedTree
    from datafactory.pack import registered_packs
    from datafactory.sinks import ocf

    pack_name, _, stream = args.stream.partition(".")
    packs = registered_packs()
    params: Any = None
    seed = args.seed
    if args.config:  # the stream as a scenario file has it (a template's streams are its own)
        cfg = _load(args.config)
        if cfg is None:
            return EXIT_CONFIG
        params = cfg.pack_params.get(pack_name)
        seed = cfg.run.seed if args.seed is None else args.seed
    if pack_name in packs and params is None:
        try:
            params = packs[pack_name].Params()
        except ValueError:
            params = None  # a pack whose params are required (template): --config
    specs = packs[pack_name].streams_for(params) if pack_name in packs else {}
    if stream not in specs:
        known = [f"{p}.{s}" for p, cls in packs.items() for s in cls.streams]
        hint = (
            "; a template's streams: pass its scenario file (--config)" if not args.config else ""
        )
        print(
            f"datafactory: unknown stream {args.stream!r}; known: {', '.join(sorted(known))}{hint}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.n < 1:
        print("datafactory: -n must be >= 1", file=sys.stderr)
        return EXIT_CONFIG
    if args.format == "avro" and sys.stdout.isatty():
        print("datafactory: Avro is binary; redirect it to a file or a pipe", file=sys.stderr)
        return EXIT_CONFIG
    cls = packs[pack_name]
    seed = 0 if seed is None else seed
    pack = cls(params, SeedTree(seed))
    block = _sample_block(pack, specs, stream, args.n, time.time_ns() // 1000)
    if block is None:
        print(f"datafactory: {args.stream}: nothing happened in 30 simulated days")
        return 1
    schema = cls.schema_of(stream, params)
    batch = build_encoder(args.format, schema, seed).encode(block)
    data = bytes(batch.contiguous())
    if args.format == "avro":
        sync = ocf.sync_marker(seed, args.stream)
        buf = io.BytesIO()
        buf.write(ocf.header(schema, sync))
        for part in ocf.block(len(batch), data, sync):
            buf.write(part)
        sys.stdout.buffer.write(buf.getvalue())
    else:
        sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def _verify_expected(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from datafactory.expect.compare import CompareError, format_report, verify_expected

    if args.actual is None:
        print("datafactory: --expected needs --actual (the platform's tables)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        try:
            tolerance = Decimal(args.tolerance)
        except InvalidOperation:
            raise CompareError(f"--tolerance {args.tolerance}: a number >= 0") from None
        if not tolerance.is_finite() or tolerance < 0:
            raise CompareError(f"--tolerance {args.tolerance}: a number >= 0")
        report = verify_expected(
            Path(args.expected), args.actual, args.question, tolerance, args.max_wrong_windows
        )
    except CompareError as e:
        print(f"datafactory: verify: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return _verdict(report, args.json, format_report)


def _expect(args: argparse.Namespace) -> int:
    from datafactory.expect.command import run

    return run(args)


def _infer(args: argparse.Namespace) -> int:
    """The template pack's drafting (``datafactory_template.infer``)."""
    from datafactory_template import infer

    if args.stream is not None and len(args.sample) > 1:
        print("datafactory: --stream names the stream of one sample", file=sys.stderr)
        return EXIT_CONFIG
    samples: dict[str, list[dict[str, Any]]] = {}
    for name in args.sample:
        path = Path(name)
        try:
            records = infer.read_sample(path, max(1, args.limit))
        except (OSError, ValueError) as e:
            print(f"datafactory: {path}: cannot read the sample: {e}", file=sys.stderr)
            return EXIT_CONFIG
        if not records or not all(isinstance(r, dict) for r in records):
            print(f"datafactory: {path}: no records (objects) in the sample", file=sys.stderr)
            return EXIT_CONFIG
        stream = args.stream or re.sub(r"[^a-z0-9_]", "_", path.name.split(".")[0].lower())
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", stream) or stream in samples:
            print(f"datafactory: {path}: stream name {stream!r}: lower case letters, digits "
                  "and _, a letter first, one per sample (rename the file, or --stream)",
                  file=sys.stderr)  # fmt: skip
            return EXIT_CONFIG
        samples[stream] = records
    scenario, notes = infer.draft_many(samples)
    text = infer.to_yaml(scenario, notes)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    if args.report:
        head = f"# sample vs draft (close: KS <= {infer.MAX_KS}, overlap >= {infer.MIN_OVERLAP})"
        print(head, file=sys.stderr)
        for stream, records in samples.items():
            made = infer.render(scenario, min(len(records), 20_000), stream=stream)
            for name, r in infer.compare(records, made).items():
                measure = f"KS {r['ks']:.3f}" if "ks" in r else f"overlap {r['overlap']:.3f}"
                print(f"#   {stream + '.' + name:40s} {measure:16s} "
                      f"{'close' if r['close'] else 'FAR'}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
