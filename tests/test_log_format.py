"""The JSON log line, record by record (the worker's lines: tests/test_observability.py)."""

from __future__ import annotations

import json
import logging
import sys
import uuid

from saas_platform.lib.telemetry import context_bind, context_clear
from saas_platform.observability.logs import JsonFormatter


def _record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord(
        "celery.app.trace", logging.ERROR, __file__, 1, message, args, exc_info
    )


def test_a_line_is_one_json_object_with_the_bound_context_and_its_traceback():
    job_id = str(uuid.uuid4())
    context_bind(tenant="acme", job_id=job_id, attempt=2, schedule=None)
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            line = JsonFormatter().format(_record("job %s failed", job_id, exc_info=sys.exc_info()))
    finally:
        context_clear()
    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == f"job {job_id} failed"
    assert (document["tenant"], document["job_id"], document["attempt"]) == ("acme", job_id, 2)
    assert "schedule" not in document  # None is not bound
    assert (document["level"], document["logger"]) == ("error", "celery.app.trace")
    assert document["timestamp"].endswith("Z")
    assert document["exception"].startswith("Traceback")
    assert "ValueError: boom" in document["exception"]


def test_a_bound_value_json_cannot_hold_still_gives_a_line():
    context_bind(job_id=uuid.UUID(int=7))
    try:
        document = json.loads(JsonFormatter().format(_record("plain")))
    finally:
        context_clear()
    assert document["job_id"] == str(uuid.UUID(int=7))
    assert "exception" not in document
