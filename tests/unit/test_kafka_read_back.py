"""verify's Kafka read-back: it reads to the end offsets and fails, rather than return part
of a topic, when the broker stalls short of them (a fake consumer: the integration tests read
real topics from Tansu)."""

from __future__ import annotations

from typing import Any

import aiokafka
import pytest

from datafactory.verify import sources


class FakeConsumer:
    """Partition 0 of topic ``t`` with records at offsets 0..4 and an end offset of 5; it
    serves ``served`` of them, then nothing more."""

    def __init__(self, served: int) -> None:
        self.served = served
        self.pos = 0

    def __call__(self, **kwargs: Any) -> FakeConsumer:
        return self

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps: Any) -> None: ...

    async def seek_to_beginning(self, *tps: Any) -> None: ...

    async def end_offsets(self, tps: Any) -> dict[Any, int]:
        return {tp: 5 for tp in tps}

    async def position(self, tp: Any) -> int:
        return self.pos

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if self.pos >= self.served:
            return {}
        self.pos += 1
        record = type("Record", (), {"value": b"%d" % (self.pos - 1), "headers": ()})()
        return {aiokafka.TopicPartition("t", 0): [record]}


async def test_a_read_to_the_end_offsets_returns_every_record(monkeypatch: Any) -> None:
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", FakeConsumer(served=5))
    got = await sources.read_kafka("127.0.0.1:1", "t", quiet=0.2)
    assert [m.value for m in got] == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_read_that_stalls_short_of_the_end_fails_instead_of_counting_losses(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", FakeConsumer(served=3))
    monkeypatch.setattr(sources, "STALL", 2)
    with pytest.raises(sources.SourceError, match=r"at offsets \{0: 3\}, short of the end"):
        await sources.read_kafka("127.0.0.1:1", "t", quiet=0.2)
