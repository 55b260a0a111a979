"""The ground-truth manifest: every injected fault written down, through a real sink.

Entries are JSON lines (or Parquet files, one per flush, on file and S3 sinks); their shape
is documented in ``schemas/chaos/manifest.avsc``. Besides faults, the manifest records how
many events each stream released (``type: run``), at every flush and finally at the end, so
``verify`` knows what was generated even without the ledger.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import structlog

from datafactory.chaos.base import Fault
from datafactory.encoders.base import EncodedBatch
from datafactory.engine.blocks import RecordBlock
from datafactory.engine.identity import event_ids
from datafactory.pack import Shard
from datafactory.schema import load_schema
from datafactory.sinks.base import Sink

log = structlog.get_logger("datafactory.chaos")
STREAM = "chaos.manifest"
COLUMNS = [
    "type", "run", "stream", "seq", "event_id", "event_time", "step", "name", "kind",
    "detail", "sink", "digest", "seed", "released", "final", "first",
]  # fmt: skip


def fault_rows(f: Fault, run: str, run_seed: int) -> list[dict[str, Any]]:
    ids = [b.decode() for b in event_ids(run_seed, f.stream, f.seq).tolist()]
    seqs, times = f.seq.tolist(), f.event_time.tolist()
    details: list[Any] = f.details or [None] * len(seqs)
    digests: list[Any] = f.digests or [None] * len(seqs)
    # a fault on the event; one sink's shed events; a byte-level fault as one sink rendered it
    kind = "fault" if f.sink is None else "shed" if f.step == "shed" else "rendered"
    return [
        {
            "type": kind,
            "run": run,
            "stream": f.stream,
            "seq": seqs[i],
            "event_id": ids[i],
            "event_time": times[i],
            "step": f.step,
            "name": f.name,
            "kind": f.kind,
            "detail": details[i],
            **({"sink": f.sink} if f.sink is not None else {}),
            **({"digest": digests[i]} if kind == "rendered" else {}),
        }
        for i in range(len(seqs))
    ]


class Manifest:
    """Collects faults from the chains and the sinks' render passes; writes them in order."""

    def __init__(
        self,
        sink: Sink,
        fmt: str,
        flush_interval: float,
        run: str,
        run_seed: int,
        released: Callable[[], dict[str, int]],
        shard: Shard | None = None,
        barrier: Callable[[], Callable[[], None]] | None = None,
    ) -> None:
        """``shard``: the part of a sharded run this manifest speaks for (its seqs start at
        ``shard.seq_base``; its files are named by shard so the parts never collide).
        ``barrier``: called as a flush takes the pending faults; what it returns is called
        once they are written (the run's checkpoint mark waits for it: a restart must never
        resume past a fault the manifest lost)."""
        self.sink = sink
        self.format = fmt
        self.flush_interval = flush_interval
        self.run = run
        self.run_seed = run_seed
        self.released = released
        self.barrier = barrier
        self.shard = shard or Shard()
        self.label = self.run if self.shard.count == 1 else f"{run}-shard{self.shard.index}"
        self.pending: list[Fault] = []
        self.written = 0
        self.errors = 0
        self._seq = self.shard.seq_base  # the manifest's own records' seqs (sink keys)
        self._files = 0
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.schema = load_schema(STREAM)

    def add(self, faults: list[Fault]) -> None:
        self.pending += faults

    async def loop(self) -> None:
        """Flush every ``flush_interval`` until ``stop``: never cancelled mid-write (a flush
        takes its entries out of ``pending`` before writing them)."""
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.flush_interval)
            except TimeoutError:
                await self.flush(final=False)

    def stop(self) -> None:
        self._stopping.set()

    async def flush(self, final: bool) -> None:
        async with self._lock:
            written = self.barrier() if self.barrier is not None else None
            faults, self.pending = self.pending, []
            rows: list[dict[str, Any]] = []
            for f in faults:
                rows += fault_rows(f, self.run, self.run_seed)
            now = int(time.time() * 1_000_000)
            rows += [
                {
                    "type": "run",
                    "run": self.run,
                    "stream": stream,
                    "seed": self.run_seed,
                    "released": n,
                    "final": final,
                    "first": self.shard.seq_base,
                    "event_time": now,
                }
                for stream, n in sorted(self.released().items())
            ]
            for attempt in range(1, 6):
                try:
                    await self._write(rows)
                    self.written += len(rows)
                    if written is not None:
                        written()
                    return
                except Exception as e:
                    self.errors += 1
                    log.warning("manifest_write_failed", attempt=attempt, error=repr(e))
                    await asyncio.sleep(0.2 * attempt)
            log.error("manifest_lost", entries=len(rows))
            raise RuntimeError(f"the manifest could not be written ({len(rows)} entries lost)")

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        if self.format == "parquet":
            await self._write_parquet(rows)
            return
        lines = [orjson.dumps(r) + b"\n" for r in rows]
        sizes = np.fromiter((len(x) for x in lines), dtype=np.int64, count=len(lines))
        offsets = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        n = len(rows)
        seq = np.arange(self._seq, self._seq + n, dtype=np.int64)
        times = np.array([r.get("event_time") or 0 for r in rows], dtype=np.int64)
        keys = np.array([r.get("seq") or 0 for r in rows], dtype=np.int64)
        block = RecordBlock(STREAM, seq, times, keys, {})
        batch = EncodedBatch(
            STREAM, self.schema, "json", memoryview(b"".join(lines)), offsets, block
        )
        await self.sink.write_batch(batch)
        self._seq += n

    async def _write_parquet(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                c: [
                    orjson.dumps(r[c]).decode()
                    if c == "detail" and r.get(c) is not None
                    else r.get(c)
                    for r in rows
                ]
                for c in COLUMNS
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        cfg: Any = self.sink.config
        if cfg.type == "file":
            folder = Path(cfg.path) / "chaos" / "manifest"

            def put() -> None:
                folder.mkdir(parents=True, exist_ok=True)
                while True:  # never overwrite an earlier run's part
                    try:
                        path = folder / f"{self.label}-{self._files:06d}.parquet"
                        with open(path, "xb") as fh:
                            fh.write(buf.getvalue())
                        return
                    except FileExistsError:
                        self._files += 1

            await asyncio.to_thread(put)
        else:
            key = f"{cfg.prefix}chaos/manifest/{self.label}-{self._files:06d}.parquet"
            await self.sink.put_object(key, buf.getvalue())  # type: ignore[attr-defined]
        self._files += 1
