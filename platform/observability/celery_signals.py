"""Celery signal handlers: each task's log lines and events start with a clean context naming the
task; the job runner adds the rest once it has claimed the job (jobs.runner). With Sentry on, a
task that raised is reported by the process that ran it, a worker or beat process drops the
Django integration (saas_platform.observability.sentry says why), and a pool child sends what it
captured before it exits. A worker's main process, and a beat of its own (`celery beat`), serve
their metrics when METRICS_PORT is set."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from celery.signals import (
    beat_init,
    task_failure,
    task_prerun,
    worker_init,
    worker_process_shutdown,
    worker_shutdown,
)
from django.conf import settings
from saas_platform.lib.telemetry import context_bind, context_clear

# saas_platform.observability.sentry is imported only with SENTRY_DSN set: it loads the SDK's
# Django and Celery integration modules, a tenth of a second at start-up of every process that
# loads the Celery app.


@task_prerun.connect
def _task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    context_clear()
    if settings.SENTRY_DSN:
        from saas_platform.observability import sentry

        sentry.task_scope_fresh(task_id)
    if task is not None:
        context_bind(task=task.name, task_id=task_id)


@task_failure.connect
def _task_failed(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    traceback: TracebackType | None = None,
    **_: Any,
) -> None:
    if settings.SENTRY_DSN and exception is not None:
        from saas_platform.observability import sentry

        sentry.task_failure_capture(sender, task_id, exception, traceback)


def sentry_for_workers() -> None:
    """The SDK as a worker or beat process runs it: initialised again, without the web's
    integration (the settings, loaded first, initialised it as for a web process)."""
    if settings.SENTRY_DSN:
        from saas_platform.observability import sentry

        sentry.sentry_init(
            dsn=settings.SENTRY_DSN,
            environment=settings.SENTRY_ENVIRONMENT or None,
            release=settings.SENTRY_RELEASE or None,
            web=False,
        )


@worker_process_shutdown.connect
@worker_shutdown.connect
def _sentry_flush(**_: Any) -> None:
    if settings.SENTRY_DSN:
        from saas_platform.observability import sentry

        sentry.sentry_flush()


# Set in the worker's main process: a beat embedded in it (`worker -B`, a forked child) writes to
# the same multiprocess directory, which the worker's page already adds up.
_serving = False


@worker_init.connect
def _worker_init(**_: Any) -> None:
    global _serving
    sentry_for_workers()
    if settings.METRICS_PORT:
        from saas_platform.observability.metrics import worker_metrics_serve

        worker_metrics_serve(settings.METRICS_PORT)
        _serving = True


@beat_init.connect
def _beat_init(**_: Any) -> None:
    sentry_for_workers()
    if settings.METRICS_PORT and not _serving:
        from saas_platform.observability.metrics import worker_metrics_serve

        # The queues' depth is the workers' pages' business: not one more copy of it.
        worker_metrics_serve(settings.METRICS_PORT, queue_depth=False)
