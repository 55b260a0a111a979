"""structlog set up once: JSON lines through orjson (or a console renderer), cached loggers.

Libraries that log through the standard library (aiokafka, aiobotocore, aiohttp) are routed
through the same renderer, so stderr carries one format only. They log at WARNING and above
unless the configured level is ``debug``.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

_HANDLER_NAME = "datafactory"
_SETTINGS = ("info", "json")  # as last configured: what worker processes set up again


def _shared() -> list[structlog.typing.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _orjson_text(obj: object, **_: object) -> str:
    return orjson.dumps(obj, default=str).decode()


def current_settings() -> tuple[str, str]:
    """(level, format) as last configured."""
    return _SETTINGS


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    global _SETTINGS
    _SETTINGS = (level, fmt)
    lvl = getattr(logging, level.upper())
    processors: list[structlog.typing.Processor] = [
        *_shared(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory: structlog.typing.WrappedLogger = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # the standard library's loggers, rendered the same way (text, since the handler writes str)
    text_renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_text) if fmt == "json" else renderer
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_shared(), structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                text_renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(logging.DEBUG if lvl <= logging.DEBUG else max(lvl, logging.WARNING))
