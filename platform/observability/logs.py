"""Log lines from web, workers and beat, with the work's context on every line.

LOG_FORMAT=json (the deploy/ files set it): one JSON object a line, through structlog's
ProcessorFormatter, so every standard-library logger (Django, Celery, ours) is rendered the same
way, with `timestamp`, `level`, `logger`, `message`, an `exception` text when there is one, and
the fields saas_platform.lib.telemetry bound for the request or task in hand (request_id, tenant,
job_type, job_id, attempt, schedule).

LOG_FORMAT=plain (the default, `make run`, the tests): the timestamped line people read, the
same fields appended as `[tenant=acme job_id=... attempt=2]`. The line starts as it always did,
so tools that group a record's lines by its leading timestamp (tests/workers.py) still work.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from saas_platform.lib.telemetry import CONTEXT_FIELDS, context_fields

LOG_FORMATS = ("plain", "json")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class PlainFormatter(logging.Formatter):
    """The human-readable line with the bound context at its end."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = context_fields()
        shown = " ".join(f"{name}={fields[name]}" for name in CONTEXT_FIELDS if name in fields)
        return f"{line} [{shown}]" if shown else line


def _json_formatter() -> dict[str, Any]:
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": [
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(),
        ],
    }


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's LOGGING for the format (checked by the settings: one of LOG_FORMATS)."""
    formatter: dict[str, Any] = (
        _json_formatter() if log_format == "json" else {"()": PlainFormatter}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "main"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "INFO"}},
    }
