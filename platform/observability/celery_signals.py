"""Celery signal handlers: each task's log lines and events start with a clean context naming the
task; the job runner adds the rest once it has claimed the job (jobs.runner). A worker's main
process, and a beat of its own (`celery beat`), serve their metrics when METRICS_PORT is set."""

from __future__ import annotations

from typing import Any

from celery.signals import beat_init, task_prerun, worker_init
from django.conf import settings
from saas_platform.lib.telemetry import context_bind, context_clear


@task_prerun.connect
def _task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    context_clear()
    if task is not None:
        context_bind(task=task.name, task_id=task_id)


# Set in the worker's main process: a beat embedded in it (`worker -B`, a forked child) writes to
# the same multiprocess directory, which the worker's page already adds up.
_serving = False


@worker_init.connect
def _worker_metrics(**_: Any) -> None:
    global _serving
    if settings.METRICS_PORT:
        from saas_platform.observability.metrics import worker_metrics_serve

        worker_metrics_serve(settings.METRICS_PORT)
        _serving = True


@beat_init.connect
def _beat_metrics(**_: Any) -> None:
    if settings.METRICS_PORT and not _serving:
        from saas_platform.observability.metrics import worker_metrics_serve

        # The queues' depth is the workers' pages' business: not one more copy of it.
        worker_metrics_serve(settings.METRICS_PORT, queue_depth=False)
