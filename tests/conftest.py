from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from datafactory.lifecycle.local import Moto, Tansu


def pytest_configure(config: object) -> None:
    # quiet, deterministic logs in tests; JSON rendering is exercised by the CLI tests
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.testing.CapturingLoggerFactory(),
        cache_logger_on_first_use=False,
    )


# Real local services, started once per session on free loopback ports, stopped at the end.
@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    m = Moto()
    m.start()
    yield m
    m.stop()


@pytest.fixture(scope="session")
def tansu() -> Iterator[Tansu]:
    t = Tansu()
    t.start()
    yield t
    t.stop()
