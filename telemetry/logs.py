"""Structured JSON logs (structlog): one line per notable event, never a secret.

The libraries' own log records (aiohttp's "Error handling request" for a malformed request, for
one) go through the same renderer: one JSON line each, an exception reduced to its type and its
message with credentials masked, since a parser's message quotes the bytes it was sent.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

import structlog
from structlog.typing import EventDict, WrappedLogger

from foundation.secrets import redact_text

_MAX_ERROR_MESSAGE: Final = 500
# The level ``configure_logging`` set, for a caller that must know it before building a line's
# fields (``debug_enabled``): asking structlog's lazy logger proxy costs about 1 µs a call, about
# 30 times more than reading this, and ingest asks on every request.
_level: int = logging.INFO


def debug_enabled() -> bool:
    """Whether debug lines are written: checked before work that only a debug line needs."""
    return _level <= logging.DEBUG


def _exception_in_one_line(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    if isinstance(event.get("event"), str):
        event["event"] = redact_text(event["event"])[:_MAX_ERROR_MESSAGE]
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple) and exc_info[1] is not None:
        error = exc_info[1]
        event["error"] = type(error).__name__
        event["error_message"] = redact_text(str(error))[:_MAX_ERROR_MESSAGE]
    return event


def configure_logging(level: str = "info") -> None:
    global _level
    numeric = logging.getLevelNamesMapping()[level.upper()]
    _level = numeric
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
                _exception_in_one_line,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
