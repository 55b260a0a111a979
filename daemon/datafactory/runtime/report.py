"""What a run made and did, as views: the ledger's counters, the live snapshot (API, SSE,
console), the summary when it ends, and the account ``datafactory run`` prints at exit (text
on a terminal, JSON with ``--json``), so the figures outlive the process and its ``/metrics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from datafactory.config import Config
from datafactory.runtime.accounting import Outcome
from datafactory.runtime.delivery import SinkDelivery
from datafactory.runtime.pacing import StreamRuntime
from datafactory.telemetry.metrics import Metrics

Chaos = dict[tuple[str, str, str], int]  # (stream, step name, kind) -> faults injected


def chaos_dropped(chaos: Chaos) -> dict[str, int]:
    """Per stream: the events chaos dropped on purpose."""
    out: dict[str, int] = {}
    for (stream, _, kind), n in chaos.items():
        if kind == "drop":
            out[stream] = out.get(stream, 0) + n
    return out


def counters(
    streams: list[StreamRuntime], chaos: Chaos, at_mark: bool
) -> dict[tuple[str, str], dict[str, int]]:
    """Per stream x sink, for the ledger (``at_mark``: the slices below the mark only)."""
    dropped = chaos_dropped(chaos)
    out: dict[tuple[str, str], dict[str, int]] = {}
    for s in streams:
        for k in s.sinks:
            if at_mark:  # and what the sink wrote from disk (done for the mark when spilled)
                o = Outcome()
                o.add(s.book.at_mark.get(k.name, Outcome()))
                o.add(k.drained.get(s.name, Outcome()))
            else:
                o = k.outcomes[s.name]
            out[(s.name, k.name)] = {
                "generated": s.book.mark - s.first_seq if at_mark else s.generated,
                "chaos_dropped": dropped.get(s.name, 0),
                "sent": o.acked + o.failed,
                **o.as_dict(),
            }
    return out


def snapshot(
    streams: list[StreamRuntime], sinks: Iterable[SinkDelivery], chaos: Chaos
) -> dict[str, Any]:
    dropped = chaos_dropped(chaos)
    return {
        "streams": {
            s.name: {
                "generated": s.generated,
                "released": s.released,
                "chaos_dropped": dropped.get(s.name, 0),
                "skipped": s.skipped,
                "target_rate": s.target_rate(),
                "rate": s.rate_now,
                "done": s.done,
            }
            for s in streams
        },
        "sinks": {k.name: k.snapshot() for k in sinks},
        "chaos": {f"{st}/{name}/{kind}": n for (st, name, kind), n in sorted(chaos.items())},
    }


def summary(
    streams: list[StreamRuntime], sinks: Iterable[SinkDelivery], chaos: Chaos
) -> dict[str, Any]:
    """The snapshot of a run that ended, with its buffers' high water and what failed on
    purpose (oversize faults that a sink with a record limit refused)."""
    sinks = list(sinks)
    out = snapshot(streams, sinks, chaos)
    out["queues"] = {
        f"sink:{k.name}": {"high_water": k.buffer.high_water, "capacity": k.max_events}
        for k in sinks
    }
    out["failed_intentionally"] = sum(
        n
        for (stream, _, kind), n in chaos.items()
        if kind == "oversize"
        for k in sinks
        if k.sink.max_record_bytes is not None
        and any(s.name == stream for s in streams if k in s.sinks)
    )
    return out


def account(config: Config, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The account of a finished run, from the engine's summary."""
    keys = ("generated", "released", "chaos_dropped")
    streams = {name: {k: v[k] for k in keys} for name, v in summary["streams"].items()}
    sinks: dict[str, Any] = {}
    for name, k in summary["sinks"].items():
        per_stream = {
            stream: {
                "sent": k["sent"][stream] + k["failed"][stream],
                "acked": k["sent"][stream],
                "failed": k["failed"][stream],
                "retried": k["retried"][stream],
                "shed": k["shed"][stream],
            }
            for stream in k["sent"]
        }
        sinks[name] = {
            "streams": per_stream,
            "buffered": k["lag_events"],  # accepted, never written (a run cut short)
            # of those, kept in a disk buffer for the run's next start
            "on_disk": (k.get("disk") or {}).get("events", 0),
            "errors": k["errors"],
            "when_full": k["buffer"]["when_full"],
        }
    return {
        "run": config.run.name,
        "seed": config.run.seed,
        "seconds": round(seconds, 3),
        "streams": streams,
        "sinks": sinks,
        "chaos": summary["chaos"],
        "manifest": manifest_location(config),
    }


def manifest_location(config: Config) -> str | None:
    """Where the run's ground truth went (None: the config has no manifest)."""
    sink: Any = config.manifest_sink
    if sink is None:
        return None
    if sink.type == "file":
        from pathlib import Path

        return str(Path(sink.path).resolve() / "chaos" / "manifest")
    if sink.type == "aws_s3":
        return f"s3://{sink.bucket}/{sink.prefix}chaos/manifest/"
    if sink.type == "kafka":
        topic = sink.topic.format(pack="chaos", stream="manifest", run=config.run.name)
        return f"kafka topic {topic}"
    return f"{sink.type} sink (stream chaos.manifest)"


def render(acc: dict[str, Any]) -> str:
    """The account for people."""
    lines = [f"run {acc['run']} (seed {acc['seed']}) ended after {acc['seconds']:,.1f} s"]
    for name, s in acc["streams"].items():
        lines.append(
            f"  stream {name}: {s['released']:,} released ({s['generated']:,} generated"
            + (f", {s['chaos_dropped']:,} dropped by chaos" if s["chaos_dropped"] else "")
            + ")"
        )
    for name, k in acc["sinks"].items():
        for stream, c in k["streams"].items():
            parts = [f"{c['acked']:,} acked"]
            parts += [f"{c[x]:,} {x}" for x in ("failed", "shed", "retried") if c[x]]
            lines.append(f"  sink {name} / {stream}: " + ", ".join(parts))
        if k["buffered"]:
            lines.append(f"  sink {name}: {k['buffered']:,} events still buffered, not written")
        if k["on_disk"]:
            lines.append(f"  sink {name}: {k['on_disk']:,} of them on disk, for the next start")
    if acc["chaos"]:
        total = sum(acc["chaos"].values())
        lines.append(f"  chaos: {total:,} faults injected ({len(acc['chaos'])} kinds)")
    if acc["manifest"]:
        lines.append(f"  manifest: {acc['manifest']}")
    return "\n".join(lines)


async def sample(
    streams: Callable[[], list[StreamRuntime]], sinks: Iterable[SinkDelivery], metrics: Metrics
) -> None:
    """Once a second: actual and target rate per stream, and every sink's lag."""
    m = metrics
    last = {s.name: (s.released, time.monotonic()) for s in streams()}
    while True:
        await asyncio.sleep(1.0)
        for s in streams():
            n0, t0 = last.get(s.name, (s.released, time.monotonic()))
            now = time.monotonic()
            s.rate_now = (s.released - n0) / max(now - t0, 1e-9)
            last[s.name] = (s.released, now)
            m.actual_rate.labels(s.name).set(s.rate_now)
            m.target_rate.labels(s.name).set(s.target_rate())
        for k in sinks:
            k.sample()
