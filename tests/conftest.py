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


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of its own on this machine's server (a fleet reads every run in
    its ledger), dropped afterwards; its URL."""
    import asyncio
    import uuid

    import asyncpg

    admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    name = f"df_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
