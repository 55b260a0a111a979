"""A run's account at exit: what each stream made and each sink did with it.

``datafactory run`` prints it when the run ends (text on a terminal, JSON with ``--json``), so
the figures outlive the process and its ``/metrics``.
"""

from __future__ import annotations

from typing import Any

from datafactory.config import Config


def account(config: Config, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The account of a finished run, from the engine's summary."""
    dropped: dict[str, int] = {}
    for key, n in summary["chaos"].items():
        stream, _, kind = key.split("/")
        if kind == "drop":
            dropped[stream] = dropped.get(stream, 0) + n
    streams = {
        name: {
            "generated": v["generated"],
            "released": v["released"],
            "chaos_dropped": dropped.get(name, 0),
        }
        for name, v in summary["streams"].items()
    }
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
    if acc["chaos"]:
        total = sum(acc["chaos"].values())
        lines.append(f"  chaos: {total:,} faults injected ({len(acc['chaos'])} kinds)")
    if acc["manifest"]:
        lines.append(f"  manifest: {acc['manifest']}")
    return "\n".join(lines)
