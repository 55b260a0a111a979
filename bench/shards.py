"""Scale-out benchmark: one sharded stream run end to end, in 1 and 2 worker processes.

* Files: retail.pos_transaction, generate + encode JSON + write, simulated clock (as fast as
  the machine allows), 2 shards in 1 worker process and in 2, against one unsharded engine
  in the same run. The goal on this 2-core machine: 2 workers >= 1.6x one worker.
* Kafka: the same to a fresh Tansu topic (3 partitions, acks=all) in 1 and 2 workers,
  against ``kcat -P`` pushing the same number of encoded records (see ``stream.py``; the
  anchor is skipped, and said, where kcat or the confluent-kafka wheel is missing).

    python bench/shards.py [--events 1000000] [--kafka-events 400000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stream import create_topic, encoded_records, kcat_rate

from datafactory.config import parse_config
from datafactory.lifecycle.local import Tansu
from datafactory.runtime.engine import Engine
from datafactory.runtime.shards import Shards

CONFIG = """
run: {{name: bench, seed: 1, clock: {clock}, shards: {shards}}}
packs:
  retail:
    params: {{stores: 50}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: {rate}}}, max_events: {events}}}
sinks:
  out: {sink}
engine: {{block_size: 8192, batch_max: 8192}}
telemetry: {{enabled: false}}
"""


def run_once(
    sink: str, events: int, shards: int, workers: int, clock: str, rate: int
) -> tuple[float, float]:
    """(events/s end to end, events/s streaming: from the first event to the last ack, the
    slowest shard's, without start-up: processes, pack entities, connections)."""
    cfg = parse_config(
        CONFIG.format(sink=sink, events=events, shards=shards, clock=clock, rate=rate)
    )
    engine: Engine | Shards = Shards(cfg, workers=workers) if shards > 1 else Engine(cfg)
    t0 = time.perf_counter()
    summary = asyncio.run(engine.run())
    dt = time.perf_counter() - t0
    sent = summary["sinks"]["out"]["sent"]["retail.pos_transaction"]
    assert sent == events, (sent, events)
    return events / dt, events / summary["streaming_seconds"]


def files(events: int, rounds: int) -> dict[str, Any]:
    got: dict[str, list[tuple[float, float]]] = {
        "one_process": [],
        "workers_1": [],
        "workers_2": [],
    }
    for _ in range(rounds):  # interleaved: the machine's noise falls on every side
        for name, shards, workers in (("one_process", 1, 1), ("workers_1", 2, 1),
                                      ("workers_2", 2, 2)):  # fmt: skip
            with tempfile.TemporaryDirectory() as tmp:
                sink = f'{{type: file, path: "{tmp}", format: json, max_bytes: 256MiB}}'
                got[name].append(run_once(sink, events, shards, workers, "simulated", 100_000))
    best = {k: max(x[0] for x in v) for k, v in got.items()}
    steady = {k: max(x[1] for x in v) for k, v in got.items()}
    return {
        "ev_s": best,
        "steady_ev_s": steady,
        "rounds": got,
        "workers_2_vs_1": best["workers_2"] / best["workers_1"],
        "workers_2_vs_one_process": best["workers_2"] / best["one_process"],
        "steady_workers_2_vs_1": steady["workers_2"] / steady["workers_1"],
    }


def kafka(events: int, rounds: int) -> dict[str, Any]:
    records = encoded_records(events)
    broker = Tansu()
    broker.start()
    got: dict[str, list[tuple[float, float]]] = {"workers_1": [], "workers_2": []}
    anchors: list[float | None] = []
    try:
        for r in range(rounds):
            asyncio.run(create_topic(broker.bootstrap, f"anchor{r}"))
            anchors.append(kcat_rate(broker.bootstrap, f"anchor{r}", records))
            for name, workers in (("workers_1", 1), ("workers_2", 2)):
                sink = (
                    f'{{type: kafka, bootstrap: "{broker.bootstrap}", topic: {name}{r}, '
                    "partitions: 3, format: json, max_in_flight: 4, producers: 3}"
                )
                got[name].append(run_once(sink, events, 2, workers, "wall", 10_000_000))
    finally:
        broker.stop()
    best = {k: max(x[0] for x in v) for k, v in got.items()}
    steady = {k: max(x[1] for x in v) for k, v in got.items()}
    valid = [a for a in anchors if a]
    anchor = max(valid) if valid else None
    return {
        "ev_s": best,
        "rounds": got,
        "steady_ev_s": steady,
        "kcat_ev_s": anchor,
        "workers_2_vs_1": best["workers_2"] / best["workers_1"],
        "steady_workers_2_vs_1": steady["workers_2"] / steady["workers_1"],
        "workers_2_vs_kcat": best["workers_2"] / anchor if anchor else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=3_000_000)
    ap.add_argument("--kafka-events", type=int, default=400_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default="artifacts/bench-shards.json")
    args = ap.parse_args()
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    out = {"files": files(args.events, args.rounds), "kafka": kafka(args.kafka_events, args.rounds)}
    f, k = out["files"], out["kafka"]
    print("sharded run, retail.pos_transaction end to end (2 shards; best of rounds):")
    print(f"  files, one unsharded process   {f['ev_s']['one_process']:12,.0f} ev/s")
    print(f"  files, 2 shards in 1 worker    {f['ev_s']['workers_1']:12,.0f} ev/s")
    print(
        f"  files, 2 shards in 2 workers   {f['ev_s']['workers_2']:12,.0f} ev/s   "
        f"x1 worker {f['workers_2_vs_1']:.2f} (goal >= 1.6), "
        f"x one process {f['workers_2_vs_one_process']:.2f}"
    )
    print(
        f"  files, streaming only (no start-up): 1 worker {f['steady_ev_s']['workers_1']:,.0f}"
        f", 2 workers {f['steady_ev_s']['workers_2']:,.0f} ev/s, "
        f"x1 worker {f['steady_workers_2_vs_1']:.2f}"
    )
    print(f"  Kafka, 1 worker                {k['ev_s']['workers_1']:12,.0f} ev/s")
    ratio = f"{k['workers_2_vs_kcat']:.2f}" if k["workers_2_vs_kcat"] else "n/a (no kcat)"
    print(
        f"  Kafka, 2 workers               {k['ev_s']['workers_2']:12,.0f} ev/s   "
        f"x1 worker {k['workers_2_vs_1']:.2f}, x kcat {ratio} (goal >= 0.8)"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
