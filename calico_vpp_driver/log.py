"""Logging: one JSON object per line on stderr, which Felix copies into its own log.

Every line names its event and carries the Felix object IDs it concerns as
fields, so a line read out of Felix's log is self-describing.
"""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}


def configure(level: str = "INFO") -> None:
    """(Re)configure structlog; `level` uses Felix's LogSeverityScreen names."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str, sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.upper(), logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
