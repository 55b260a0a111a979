"""A consumer that follows Kafka topics while a run goes on, through broker restarts, and
keeps every record as a JSON line in ``<dir>/<stream>/<partition>.jsonl``.

Reading a long soak's topic back at the end is quadratic on this machine's stand-ins (Tansu
keeps each produced batch as an object in moto's S3 and lists the bucket for every fetch:
an hour's topic took 77 minutes to read back, and the reader gave up half way). Following the
topics as they are written reads each batch once, while the listing is still short; at the
end ``verify`` reads the files (``source_overrides={"bus": "<dir>/{stream}"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import IO, Any


class Follower(threading.Thread):
    def __init__(self, bootstrap: str, topics: dict[str, str], out: Path) -> None:
        """``topics``: topic name -> stream name."""
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.topics = topics
        self.out = out
        self.records = 0
        self.error: BaseException | None = None
        self.trace: list[tuple[float, str, int, str, str]] = []  # (monotonic, what, records..)
        self._finish = threading.Event()
        self._done_by = 0.0

    def finish(self, within: float) -> None:
        """Read on to the topics' end (as the broker reports it, then until a quiet spell),
        then stop; raise if that takes longer than ``within`` seconds."""
        self._done_by = time.monotonic() + within
        self._finish.set()
        self.join(within + 30)
        if self.is_alive():
            raise TimeoutError(f"the follower did not reach the end within {within} s")
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        try:
            asyncio.run(self._follow())
        except BaseException as e:  # handed to finish()
            self.error = e

    async def _follow(self) -> None:
        from aiokafka import TopicPartition

        files: dict[TopicPartition, IO[bytes]] = {}
        nxt: dict[TopicPartition, int] = {}  # the next offset to read, per partition
        try:
            while not await self._consume(files, nxt):
                self.trace.append((round(time.monotonic(), 1), "restart", self.records, "", ""))
        finally:
            for f in files.values():
                f.close()

    async def _consume(self, files: dict[Any, IO[bytes]], nxt: dict[Any, int]) -> bool:
        """Read with one consumer from ``nxt`` on; True when the end is reached, False when
        the consumer is stuck (no record for STUCK seconds while the broker's end offsets
        are ahead of it: seen after a broker restart, aiokafka fetching nothing for good)
        and a new one should take over."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=10_000,
            retry_backoff_ms=500,
            # the topics appear when the run starts: without this, aiokafka saw them only at
            # its next metadata refresh, five minutes on (the three-minute soak read nothing
            # until it was over)
            metadata_max_age_ms=2_000,
        )
        try:
            await consumer.start()
            tps: list[TopicPartition] = []
            while len({tp.topic for tp in tps}) < len(self.topics):  # the run creates them
                try:
                    await consumer.topics()
                except KafkaError:  # the broker is being restarted
                    await asyncio.sleep(1)
                    continue
                tps = [
                    TopicPartition(t, p)
                    for t in self.topics
                    for p in sorted(consumer.partitions_for_topic(t) or ())
                ]
                if self._finish.is_set() and time.monotonic() > self._done_by:
                    raise TimeoutError(f"topics {sorted(self.topics)} never appeared")
                await asyncio.sleep(1)
            consumer.assign(tps)
            for tp in tps:
                if tp in nxt:
                    consumer.seek(tp, nxt[tp])
                else:
                    await consumer.seek_to_beginning(tp)
                if tp not in files:
                    d = self.out / self.topics[tp.topic]
                    d.mkdir(parents=True, exist_ok=True)
                    files[tp] = (d / f"{tp.partition}.jsonl").open("ab")
            quiet_since = checked = time.monotonic()
            ends: dict[TopicPartition, int] | None = None
            reached = False
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                got = 0
                for tp, msgs in batches.items():
                    f = files[tp]
                    f.write(b"".join(m.value + b"\n" for m in msgs if m.value))
                    f.flush()
                    got += len(msgs)
                    if msgs:
                        nxt[tp] = msgs[-1].offset + 1
                self.records += got
                now = time.monotonic()
                if got:
                    quiet_since = now
                if now - quiet_since >= STUCK and now - checked >= STUCK:
                    checked = now
                    try:  # (an aiokafka stuck after a broker restart hangs here too)
                        latest = await asyncio.wait_for(consumer.end_offsets(tps), 10)
                    except TimeoutError:
                        return False
                    except KafkaError:
                        continue  # the broker is away: wait for it
                    if any(nxt.get(tp, 0) < latest[tp] for tp in tps):
                        return False  # records are there and this consumer gets none
                if not self._finish.is_set():
                    continue
                if ends is None:  # the run is over: nothing more will be produced
                    ends = await consumer.end_offsets(tps)
                    at = {str(tp): await consumer.position(tp) for tp in tps}
                    self.trace.append((round(now, 1), "finish", self.records, str(at), str(ends)))
                at_end = all([await consumer.position(tp) >= ends[tp] for tp in tps])
                if at_end and not reached:
                    reached = True
                    self.trace.append((round(now, 1), "at_end", self.records, "", ""))
                if at_end and now - quiet_since >= 5:  # Tansu's end is its last batch's base
                    self.trace.append((round(now, 1), "done", self.records, "", ""))
                    return True
                if now > self._done_by:
                    at = {str(tp): await consumer.position(tp) for tp in tps}
                    raise TimeoutError(f"the follower stopped at {at}, short of {ends}")
        finally:
            with contextlib.suppress(TimeoutError, KafkaError):  # a stuck one is dropped
                await asyncio.wait_for(consumer.stop(), 10)


STUCK = 30.0  # seconds without a record, with the end offsets ahead: a new consumer
