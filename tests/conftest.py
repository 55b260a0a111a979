from __future__ import annotations

import structlog


def pytest_configure(config: object) -> None:
    # quiet, deterministic logs in tests; JSON rendering is exercised by the CLI tests
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.testing.CapturingLoggerFactory(),
        cache_logger_on_first_use=False,
    )
