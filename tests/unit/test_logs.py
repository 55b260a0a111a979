from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from datafactory.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**config)
    root.handlers, root.level = handlers, level


def test_library_logs_come_out_as_the_same_json(
    restore_logging: None, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    structlog.get_logger("datafactory.test").info("ours", n=1)
    logging.getLogger("aiokafka.client").error("Unable connect to node with id %s", 111)
    logging.getLogger("aiokafka.client").info("too chatty")  # below WARNING: dropped
    lines = [orjson.loads(x) for x in capfd.readouterr().err.splitlines()]
    assert [x["event"] for x in lines] == ["ours", "Unable connect to node with id 111"]
    assert lines[1]["level"] == "error" and lines[1]["logger"] == "aiokafka.client"
    assert "timestamp" in lines[0] and "timestamp" in lines[1]
