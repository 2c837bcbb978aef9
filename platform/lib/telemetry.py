"""What a log line or a Sentry event says about the work in hand: tenant, job, attempt, request.

One call binds the fields in both places: structlog's context variables (every log line of the
process's JSON or plain formatter carries them, saas_platform.observability.logs) and the current
Sentry scope's tags (Celery's and Django's integrations give each task and request a scope of its
own, so the tags leave with it). Without SENTRY_DSN the Sentry calls are no-ops.

It also remembers the values that must never reach Sentry for the work in hand (a job's
arguments and result): the event scrubber (saas_platform.observability.sentry) replaces them
wherever they turn up, a frame's local variable included. Job code lives below the wiring, so
this module is the library the jobs layer calls.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import sentry_sdk
import structlog

# Fields every log line and event may carry; the plain formatter prints them in this order.
CONTEXT_FIELDS = ("request_id", "tenant", "job_type", "job_id", "attempt", "schedule")

# Shorter strings are too common to scrub by value (a job argument "1" would erase every 1).
_MIN_SECRET_LENGTH = 4

_secrets: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "telemetry_secrets", default=frozenset()
)


def context_clear() -> None:
    """Forget the previous task's or request's fields (a pool process runs many in turn)."""
    structlog.contextvars.clear_contextvars()
    _secrets.set(frozenset())


def context_bind(**fields: Any) -> None:
    """Bind fields (None ones are skipped) to this task's or request's log lines and events."""
    present = {name: value for name, value in fields.items() if value is not None}
    structlog.contextvars.bind_contextvars(**present)
    for name, value in present.items():
        sentry_sdk.set_tag(name, str(value))


@contextlib.contextmanager
def context_scoped(**fields: Any) -> Iterator[None]:
    """`fields` bound for the block only, for a process that handles one unit of work after
    another without a task or request scope of its own (the beat's entries): the log fields are
    cleared after it and the Sentry tags stay in a scope of the block's."""
    with sentry_sdk.isolation_scope():
        context_bind(**fields)
        try:
            yield
        finally:
            context_clear()


@contextlib.contextmanager
def context_line(**fields: Any) -> Iterator[None]:
    """`fields` added for the block, on top of what is bound, and the previous fields restored
    after it: one line about one item of a batch (an occurrence among a tenant's)."""
    with sentry_sdk.isolation_scope(), structlog.contextvars.bound_contextvars(**fields):
        for name, value in fields.items():
            sentry_sdk.set_tag(name, str(value))
        yield


def context_fields() -> dict[str, Any]:
    return structlog.contextvars.get_contextvars()


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(key)
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def secrets_add(*values: Any) -> None:
    """Values (a job's arguments, its result: any JSON) whose every leaf is kept out of events."""
    found = {leaf for value in values for leaf in _leaves(value) if len(leaf) >= _MIN_SECRET_LENGTH}
    if found:
        _secrets.set(_secrets.get() | found)


def secrets() -> frozenset[str]:
    return _secrets.get()
