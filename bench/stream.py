"""Stream-mode benchmarks, as ratios to native anchors timed in the same run.

* Kafka: our engine end to end (generate + encode JSON + produce with aiokafka's batch API,
  acks=all, 3 partitions, no compression) against ``kcat -P`` pushing the very same encoded
  records from a file, to the same fresh Tansu broker. kcat is Debian's, run against the newer
  librdkafka bundled in the confluent-kafka wheel (Debian's 2.0.2 cannot read Tansu's
  ApiVersions reply).
* Kinesis: the engine end to end against a bare aiobotocore PutRecords loop (500 records per
  call, pre-encoded, one call at a time) on fresh moto streams of 20,000 records (moto slows
  down as a stream fills, and loses records when calls overlap).

    python bench/stream.py [--events 400000] [--rounds 3] [--json artifacts/bench-stream.json]

Figures are the best of ``--rounds`` runs per side (interleaved, each on a fresh topic);
all rounds are kept in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from datafactory.config import parse_config
from datafactory.encoders.json import JsonEncoder
from datafactory.engine.seeding import SeedTree
from datafactory.lifecycle.local import Moto, Tansu
from datafactory.runtime.drive import uniform_times
from datafactory.runtime.engine import Engine
from datafactory_retail import RetailPack, RetailParams


def encoded_records(n: int) -> list[bytes]:
    gen = RetailPack(RetailParams(), SeedTree(1)).stream("pos_transaction")
    enc = JsonEncoder(gen.schema, 1)
    out: list[bytes] = []
    while len(out) < n:
        batch = enc.encode(gen.generate(len(out), uniform_times(min(8192, n - len(out)), 0, 10**9)))
        out += [bytes(r[:-1]) for r in batch.records()]
    return out


def librdkafka_dir() -> str | None:
    """A folder holding librdkafka.so.1 from the confluent-kafka wheel, for kcat."""
    libs = glob.glob(str(Path(sys.prefix) / "lib/python*/site-packages/confluent_kafka.libs"))
    found = glob.glob(os.path.join(libs[0], "librdkafka*.so*")) if libs else []
    if not found:
        return None
    folder = tempfile.mkdtemp(prefix="rdkafka-")
    os.symlink(found[0], os.path.join(folder, "librdkafka.so.1"))
    return folder


def kcat_rate(bootstrap: str, topic: str, records: list[bytes]) -> float | None:
    kcat, lib = shutil.which("kcat"), librdkafka_dir()
    if kcat is None or lib is None:
        print("kcat anchor unavailable (apt-get install kcat; pip install confluent-kafka)")
        return None
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
        f.write(b"\n".join(records) + b"\n")
    subprocess.run(
        ["kcat", "-b", bootstrap, "-L"],
        env={**os.environ, "LD_LIBRARY_PATH": lib},
        capture_output=True,
        timeout=30,
    )
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            kcat,
            "-P",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-X",
            "acks=all",
            "-X",
            "linger.ms=5",
            "-X",
            "batch.size=1000000",
            "-l",
            f.name,
        ],
        env={**os.environ, "LD_LIBRARY_PATH": lib},
        capture_output=True,
        timeout=300,
    )
    dt = time.perf_counter() - t0
    os.unlink(f.name)
    if r.returncode != 0:
        print("kcat failed:", r.stderr.decode()[-500:])
        return None
    return len(records) / dt


async def create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()


def engine_rate(sink_yaml: str, events: int) -> float:
    cfg = parse_config(f"""
run: {{name: bench, seed: 1}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 10000000}}, max_events: {events}}}
sinks:
  out: {sink_yaml}
engine: {{block_size: 8192, batch_max: 8192}}
telemetry: {{enabled: false}}
""")
    t0 = time.perf_counter()
    summary = asyncio.run(Engine(cfg).run())
    dt = time.perf_counter() - t0
    sent = summary["sinks"]["out"]["sent"]["retail.pos_transaction"]
    assert sent == events, summary
    STEADY.append(events / summary["streaming_seconds"])
    return events / dt


# engine rates without start-up (pack entities, provisioning, connecting) and shutdown
STEADY: list[float] = []


async def bare_put_records(endpoint: str, name: str, records: list[bytes]) -> float:
    import aiobotocore.session

    async with aiobotocore.session.get_session().create_client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    ) as c:
        await c.create_stream(StreamName=name, ShardCount=2)
        await c.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
        t0 = time.perf_counter()
        for i in range(0, len(records), 500):
            chunk = records[i : i + 500]
            resp = await c.put_records(
                StreamName=name,
                Records=[{"Data": r, "PartitionKey": str(j % 50)} for j, r in enumerate(chunk)],
            )
            assert resp["FailedRecordCount"] == 0
        return len(records) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--kinesis-events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3, help="best of this many runs per side")
    ap.add_argument("--json", default="artifacts/bench-stream.json")
    args = ap.parse_args()
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    out: dict[str, Any] = {}
    records = encoded_records(args.events)
    broker = Tansu()
    broker.start()
    try:
        # best of `rounds` for both sides, interleaved, each on a fresh topic
        anchors, ours_runs = [], []
        for r in range(args.rounds):
            asyncio.run(create_topic(broker.bootstrap, f"anchor{r}"))
            anchors.append(kcat_rate(broker.bootstrap, f"anchor{r}", records))
            ours_runs.append(
                engine_rate(
                    f'{{type: kafka, bootstrap: "{broker.bootstrap}", topic: ours{r}, '
                    f"partitions: 3, format: json, max_in_flight: 4, producers: 3}}",
                    args.events,
                )
            )
        valid = [a for a in anchors if a]
        anchor = max(valid) if valid else None
        ours = max(ours_runs)
    finally:
        broker.stop()
    out["kafka"] = {
        "engine_ev_s": ours,
        "kcat_ev_s": anchor,
        "ratio": ours / anchor if anchor else None,
        "record_bytes_avg": sum(map(len, records)) / len(records),
        "rounds": {"engine": ours_runs, "kcat": anchors},
        "engine_steady_ev_s": max(STEADY),
        "steady_ratio": max(STEADY) / anchor if anchor else None,
    }
    kafka_steady = max(STEADY)
    STEADY.clear()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    moto = Moto()
    moto.start()
    try:
        # best of `rounds` per side, interleaved, each on a fresh stream (moto slows as one fills)
        bares, ours_ks = [], []
        for r in range(args.rounds):
            bares.append(
                asyncio.run(
                    bare_put_records(moto.endpoint, f"anchor{r}", records[: args.kinesis_events])
                )
            )
            ours_ks.append(
                engine_rate(
                    f'{{type: aws_kinesis, endpoint_url: "{moto.endpoint}", stream: ours{r}, '
                    f"shards: 2, format: json, max_in_flight: 1}}",
                    args.kinesis_events,
                )
            )
        bare, ours_k = max(bares), max(ours_ks)
    finally:
        moto.stop()
    out["kinesis"] = {
        "engine_ev_s": ours_k,
        "bare_put_records_ev_s": bare,
        "ratio": ours_k / bare,
        "rounds": {"engine": ours_ks, "bare": bares},
        "engine_steady_ev_s": max(STEADY),
        "steady_ratio": max(STEADY) / bare,
    }
    k = out["kafka"]
    print(f"Kafka (Tansu), {args.events:,} events of ~{k['record_bytes_avg']:.0f} B, 3 partitions:")
    print(f"  engine end to end {ours:12,.0f} ev/s")
    if anchor:
        print(f"  kcat -P (anchor)  {anchor:12,.0f} ev/s   ratio {ours / anchor:.2f}")
        steady = kafka_steady
        print(
            f"  engine, first event to last ack (no start-up): {steady:,.0f} ev/s   "
            f"ratio {steady / anchor:.2f}"
        )
    print(f"Kinesis (moto), {args.kinesis_events:,} events, fresh streams:")
    print(f"  engine end to end {ours_k:12,.0f} ev/s")
    print(f"  bare PutRecords   {bare:12,.0f} ev/s   ratio {ours_k / bare:.2f}")
    print(
        f"  engine, first event to last ack (no provisioning): "
        f"{out['kinesis']['engine_steady_ev_s']:,.0f} ev/s   "
        f"ratio {out['kinesis']['steady_ratio']:.2f}"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
