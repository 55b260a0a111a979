"""``datafactory verify``: prove what a platform did with a run's events.

It reads back the run's sinks (or sources given on the command line), the chaos manifest,
and optionally the platform's dead-letter queue and accepted output; reconciles them (see
:mod:`.reconcile`); prints a table or JSON; and fails (exit 1) when a threshold is missed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from datafactory.config import Config, SinkBase
from datafactory.sinks.base import SinkContext
from datafactory.verify import sources
from datafactory.verify.reconcile import Identifier, Seen, Truth, platform, transport


class VerifyError(Exception):
    """Verify could not run (a source is unreachable, the manifest is missing...)."""


@dataclass
class Thresholds:
    max_missing: int = 0
    max_duplicated: int = 0
    max_unidentified: int = 0
    min_recall: dict[str, float] = field(default_factory=dict)  # "" = overall
    min_precision: float | None = None
    max_false_positives: int | None = None


def _aws_query(cfg: Any) -> str:
    q = {"region": cfg.region}
    if cfg.endpoint_url:
        q["endpoint"] = cfg.endpoint_url
    return urlencode(q)


def sink_uri(config: Config, name: str, sink: SinkBase, stream: str) -> str:
    """Where a run's sink put a stream's events, as a source URI."""
    from datafactory.pack import registered_sinks

    ctx = SinkContext(config.run.name, config.run.seed)
    cfg: Any = sink
    inst: Any = registered_sinks()[sink.type](name, sink, ctx)
    if sink.type == "file":
        return f"file://{_abs(cfg.path)}/{stream.replace('.', '/')}"
    if getattr(cfg, "provider", "external") == "local":
        raise VerifyError(
            f"sink {name!r} uses provider: local, whose stand-in stopped with the run: "
            "run against an external broker/endpoint to verify, or give --source"
        )
    if sink.type == "kafka":
        return f"kafka://{cfg.bootstrap.split(',')[0]}/{inst.topic_for(stream)}"
    if sink.type == "aws_s3":
        pack, _, s = stream.partition(".")
        return f"s3://{cfg.bucket}/{cfg.prefix}{pack}/{s}/?{_aws_query(cfg)}"
    if sink.type == "aws_kinesis":
        return f"kinesis://{inst.stream_for(stream)}?{_aws_query(cfg)}"
    raise VerifyError(f"sink {name!r} ({sink.type}) cannot be read back; give --source")


def _abs(path: str) -> str:
    from pathlib import Path

    return str(Path(path).resolve())


def manifest_uri(config: Config) -> str:
    sink = config.manifest_sink
    if sink is None:
        raise VerifyError("the config has no manifest section; give --manifest")
    if sink.type == "file":
        return f"file://{_abs(sink.path)}/chaos/manifest"  # type: ignore[attr-defined]
    if sink.type == "aws_s3":
        cfg: Any = sink
        return f"s3://{cfg.bucket}/{cfg.prefix}chaos/manifest/?{_aws_query(cfg)}"
    return sink_uri(config, "manifest", sink, "chaos.manifest")


async def load_truth(uri: str, run: str, quiet: float) -> Truth:
    prefix = run if uri.startswith("file://") or "://" not in uri else ""
    msgs = await sources.read(uri, quiet, name_prefix=prefix)
    rows: list[dict[str, Any]] = []
    import orjson

    for m in msgs:
        if m.record is not None:
            r = dict(m.record)
            if isinstance(r.get("detail"), str):
                r["detail"] = orjson.loads(r["detail"])
            rows.append(r)
        elif m.value:
            rows.append(orjson.loads(m.value))
    truth = Truth.from_rows(rows, run)
    if truth.seed is None:
        raise VerifyError(f"{uri}: no manifest entries for run {run!r}")
    return truth


async def verify(
    config: Config,
    *,
    manifest: str | None = None,
    source_overrides: dict[str, str] | None = None,
    only_sinks: list[str] | None = None,
    dlq: str | None = None,
    accepted: str | None = None,
    quiet: float = 3.0,
    thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    th = thresholds or Thresholds()
    truth = await load_truth(manifest or manifest_uri(config), config.run.name, quiet)
    schemas = {p.event_type: p.schema for p in config.streams}
    ident = Identifier(truth, schemas)
    report: dict[str, Any] = {
        "run": truth.run,
        "seed": truth.seed,
        "manifest_final": truth.final,
        "released": dict(truth.released),
        "chaos": _fault_counts(truth),
        "sinks": {},
        "platform": {},
        "failures": [],
    }
    overrides = source_overrides or {}
    delivered: dict[str, set[int]] = {}
    for name, sink in config.sinks.items():
        if only_sinks is not None and name not in only_sinks:
            continue
        if sink.type == "stdout" and name not in overrides:
            continue
        for plan in config.streams:
            if name not in plan.sinks:
                continue
            stream = plan.event_type
            override = overrides.get(name)
            uri = override.replace("{stream}", stream) if override else None
            uri = uri or sink_uri(config, name, sink, stream)
            prefix = config.run.name if sink.type == "file" and name not in overrides else ""
            try:
                msgs = await sources.read(uri, quiet, name_prefix=prefix)
            except sources.SourceError as e:
                if sink.type != "file" or truth.released.get(stream, 0):
                    raise VerifyError(str(e)) from None
                msgs = []  # a stream that released nothing made no folder
            seen = Seen.of(msgs, ident)
            limited = sink.type in ("kafka", "aws_kinesis")
            row = transport(truth, stream, seen, limited, name)
            row["unidentified"] = seen.unidentified
            row["source"] = uri
            report["sinks"].setdefault(name, {})[stream] = row
            delivered.setdefault(stream, set()).update(seen.streams(stream))
    if dlq is not None or accepted is not None:
        seen_dlq = Seen.of(await sources.read(dlq, quiet), ident) if dlq else None
        seen_acc = Seen.of(await sources.read(accepted, quiet), ident) if accepted else None
        for plan in config.streams:
            stream = plan.event_type
            report["platform"][stream] = p = platform(
                truth, stream, delivered.get(stream), seen_acc, seen_dlq
            )
            p["unidentified"] = (seen_dlq.unidentified if seen_dlq else 0) + (
                seen_acc.unidentified if seen_acc else 0
            )
    report["identified_by"] = dict(ident.how)
    report["failures"] = _failures(report, th)
    return report


def _fault_counts(truth: Truth) -> dict[str, int]:
    out: dict[str, int] = {}
    for hits in truth.faults.values():
        for step, kind in hits:
            out[f"{step}.{kind}"] = out.get(f"{step}.{kind}", 0) + 1
    return dict(sorted(out.items()))


def _failures(report: dict[str, Any], th: Thresholds) -> list[str]:
    out: list[str] = []
    if not report["manifest_final"]:
        out.append("the manifest has no final entry: the run did not finish (counts may be short)")
    for sink, streams in report["sinks"].items():
        for stream, r in streams.items():
            if r["missing"] > th.max_missing:
                out.append(f"{sink}/{stream}: {r['missing']} events missing (max {th.max_missing})")
            if r["duplicated_beyond"] > th.max_duplicated:
                out.append(
                    f"{sink}/{stream}: {r['duplicated_beyond']} unintended duplicates "
                    f"(max {th.max_duplicated})"
                )
            if r["unidentified"] > th.max_unidentified:
                out.append(f"{sink}/{stream}: {r['unidentified']} messages no run event names")
    for stream, p in report["platform"].items():
        lost = p["clean_lost"] + p["faulty_lost"]
        if lost > th.max_missing:
            out.append(f"platform/{stream}: {lost} events neither accepted nor in the DLQ")
        if p["unaccounted"] > th.max_missing:
            out.append(f"platform/{stream}: {p['unaccounted']} events unaccounted for")
        for kind, minimum in th.min_recall.items():
            recall = p["recall"] if kind == "" else (p["by_fault"].get(kind) or {}).get("recall")
            if recall is not None and recall < minimum:
                what = kind or "overall"
                out.append(f"platform/{stream}: DLQ recall {what} {recall:.4f} < {minimum}")
        precision = p["precision"]
        if th.min_precision is not None and precision is not None and precision < th.min_precision:
            out.append(
                f"platform/{stream}: DLQ precision {p['precision']:.4f} < {th.min_precision}"
            )
        if th.max_false_positives is not None and p["false_positives"] > th.max_false_positives:
            out.append(
                f"platform/{stream}: {p['false_positives']} clean events in the DLQ "
                f"(max {th.max_false_positives})"
            )
    return out


def format_table(report: dict[str, Any]) -> str:
    """The report for people."""
    lines = [f"run {report['run']} (seed {report['seed']})"]
    for stream, n in report["released"].items():
        lines.append(f"  {stream}: {n:,} events released")
    if report["chaos"]:
        lines.append("chaos injected (manifest):")
        lines += [f"  {k:<40} {v:>10,}" for k, v in report["chaos"].items()]
    for sink, streams in report["sinks"].items():
        for stream, r in streams.items():
            lines.append(f"sink {sink} / {stream}  ({r['source']})")
            for key in (
                "delivered",
                "messages",
                "dropped_intentionally",
                "rejected_oversize_intentionally",
                "shed",
                "missing",
                "duplicated_intentionally",
                "duplicated_beyond",
                "dropped_but_arrived",
                "delayed_intentionally",
                "out_of_order",
                "unidentified",
            ):
                lines.append(f"  {key.replace('_', ' '):<40} {r[key]:>10,}")
    for stream, p in report["platform"].items():
        lines.append(f"platform / {stream}")
        lines.append(
            f"  accepted {p['accepted']:,}, DLQ {p['dlq']:,}; your DLQ caught "
            f"{p['caught']:,} of {p['faulty_reached']:,} faulty events and wrongly rejected "
            f"{p['false_positives']:,} clean events"
        )
        for key in ("recall", "precision"):
            v = p[key]
            lines.append(f"  {key:<40} {'-' if v is None else f'{v:.4f}':>10}")
        for key in ("faulty_accepted", "clean_lost", "faulty_lost", "unaccounted"):
            lines.append(f"  {key.replace('_', ' '):<40} {p[key]:>10,}")
        lines.append(
            f"  {'fault':<40} {'injected':>10} {'caught':>10} {'passed':>10} {'recall':>8}"
        )
        for kind, row in p["by_fault"].items():
            rec = "-" if row["recall"] is None else f"{row['recall']:.4f}"
            lines.append(
                f"  {kind:<40} {row['injected']:>10,} {row['caught']:>10,} "
                f"{row['passed']:>10,} {rec:>8}"
            )
    lines.append(
        "identified by: " + ", ".join(f"{k} {v:,}" for k, v in report["identified_by"].items())
    )
    if report["failures"]:
        lines.append("FAILED:")
        lines += [f"  {f}" for f in report["failures"]]
    else:
        lines.append("OK: every event is accounted for within the thresholds")
    return "\n".join(lines)


def run_verify(config: Config, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(verify(config, **kwargs))
