"""Sentry, on only when SENTRY_DSN is set: the events an on-call engineer wants.

- Every event from web and workers carries the tags of saas_platform.lib.telemetry (tenant,
  job_type, job_id, attempt, schedule; request_id on the web), plus release and environment.
- A job's retries are not events: the runner acknowledges a retried attempt with Celery's Ignore,
  which is no task failure, and its log line is a breadcrumb. The attempt that fails for good
  raises, and the runner adds the earlier attempts as breadcrumbs.
- Those final failures are fingerprinted per tenant and job type, so one tenant's broken
  integration is one issue however many jobs fail, and not merged with another tenant's.
- Workers and beats do not use the SDK's Celery and Django integrations: together they cost a
  short job two thirds more CPU in the process that ran it (bench.task_cpu, 2026-12-04: 0.83 ms
  a `demo.add` job without Sentry, 1.41 ms with both, 0.86 ms with neither). The Celery
  integration's share is a broker connection looked up from the app's configuration, a span and
  an unsampled transaction per task; the Django integration's a hook on every SQL statement that
  records it as a breadcrumb. In their place, Celery signals (observability.celery_signals): a
  task starts on a clean scope (`task_scope_fresh`), a task that raised is captured where it ran
  (`task_failure_capture`), and a pool child flushes what it captured before it exits; on every
  such event the job's own tags and attempt breadcrumbs are what tell its story. The web keeps
  the Django integration, for the request on every event.
- Everything goes through saas_platform.observability.scrub on the way out, breadcrumbs included.
  Breadcrumbs are scrubbed there, when an event carries them, not as each is recorded: a task
  records several (its log lines) and almost never sends an event, and scrubbing each as it
  came cost more than the rest of the observability together (bench.observability_overhead).
"""

from __future__ import annotations

import contextvars
from importlib import metadata
from types import TracebackType
from typing import Any

import sentry_sdk
from django.core.exceptions import ImproperlyConfigured
from saas_platform.observability.scrub import scrub_event
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.integrations.redis import RedisIntegration
from sentry_sdk.utils import BadDsn, event_from_exception

# The tag the runner sets on the attempt that fails a job for good (jobs.runner).
FINAL_FAILURE_TAG = "job_final"


def _release() -> str:
    try:
        return f"saas-jobs-platform@{metadata.version('saas-jobs-platform')}"
    except metadata.PackageNotFoundError:
        return "saas-jobs-platform@unknown"


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    tags = event.get("tags") or {}
    if tags.get(FINAL_FAILURE_TAG) and tags.get("tenant") and tags.get("job_type"):
        event["fingerprint"] = ["job-failed", str(tags["tenant"]), str(tags["job_type"])]
    return scrub_event(event)


def sentry_init(
    *,
    dsn: str,
    environment: str | None,
    release: str | None,
    traces_sample_rate: float | None = None,
    web: bool = True,
) -> None:
    """`web`: the Django integration on (a request's details on its events); off in workers and
    beats, where it would hook every SQL statement and no event has a request."""
    # Not auto-enabled either: the Celery integration is replaced by our signals everywhere (a
    # web process only publishes, which with trace propagation off the integration leaves alone).
    disabled = [RedisIntegration(), CeleryIntegration()]
    integrations = [DjangoIntegration(signals_spans=False)] if web else []
    try:
        sentry_sdk.init(
            dsn=dsn,
            environment=environment,
            release=release or _release(),
            # Errors, not traces: no spans for Django's signals, and no breadcrumb per Redis
            # command (the dispatcher and heartbeats send thousands; they cost CPU per task and
            # tell on-call little).
            integrations=integrations,
            disabled_integrations=disabled,
            # A worker re-initialises the SDK after the settings did (celery_signals): an
            # integration installed then stays installed, and auto-enabling would take Django's
            # back into the client. The defaults (logging, threads, excepthook...) stay on.
            auto_enabling_integrations=web,
            send_default_pii=False,
            # Request bodies hold job arguments; the API's own error envelope says what was wrong.
            max_request_body_size="never",
            before_send=before_send,  # type: ignore[arg-type]
            # None, not 0: with any rate set the SDK starts a (discarded) transaction per task
            # and request. Errors only, unless an operator asks for traces.
            traces_sample_rate=traces_sample_rate,
        )
    except BadDsn as exc:
        raise ImproperlyConfigured(f"SENTRY_DSN is not a valid Sentry DSN: {exc}") from None
    # A pool child killed under a job is logged by the main process at ERROR on every kill; the
    # redelivery runs the job again, and only the attempt that exhausts them is an alert.
    ignore_logger("celery.worker.request")
    # Celery logs a task that raised at ERROR; task_failure_capture reports it, with its traceback.
    ignore_logger("celery.app.trace")
    # A worker's main process logs each message it receives: as breadcrumbs these pile up in a
    # process that runs no task and almost never sends an event, at a cost on every job.
    ignore_logger("celery.worker.strategy")


# The task this process is running (set at task_prerun, which only the process that runs a task
# sees): Celery's main process also signals the failure of a task it ended (a hard time limit,
# a lost worker), from a request that holds none of the task's context; the task's own process,
# or the results backend, reports those ends.
_running_task: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sentry_running_task", default=None
)


def task_scope_fresh(task_id: str | None) -> None:
    """A task's tags and breadcrumbs only: a pool process runs one task after another in the same
    scope. Clearing it keeps the client and the scope's event processors."""
    sentry_sdk.get_isolation_scope().clear()
    _running_task.set(task_id)


def task_failure_capture(
    task: Any, task_id: str | None, exception: BaseException, traceback: TracebackType | None
) -> None:
    """A task that raised, reported from the process that ran it, with its scope's tags."""
    if task_id is None or _running_task.get() != task_id:
        return  # Celery's main process, about a task that ran elsewhere
    if isinstance(exception, getattr(task, "throws", ())):
        return  # an outcome the task declares expected (Celery's `throws`)
    client = sentry_sdk.get_client()
    event, hint = event_from_exception(
        (type(exception), exception, traceback),
        client_options=client.options,
        mechanism={"type": "celery", "handled": False},
    )
    event.setdefault("tags", {})["celery_task_id"] = task_id
    event["transaction"] = getattr(task, "name", None) or "celery task"
    sentry_sdk.capture_event(event, hint=hint)


def sentry_flush() -> None:
    """What a process captured, sent before it exits (a pool child leaves with os._exit)."""
    sentry_sdk.flush(timeout=2)
