"""Sentry, on only when SENTRY_DSN is set: the events an on-call engineer wants.

- Every event from web and workers carries the tags of saas_platform.lib.telemetry (tenant,
  job_type, job_id, attempt, schedule; request_id on the web), plus release and environment.
- A job's retries are not events: the runner acknowledges a retried attempt with Celery's Ignore,
  which the Celery integration does not report, and its log line is a breadcrumb. The attempt
  that fails for good raises, and the runner adds the earlier attempts as breadcrumbs.
- Those final failures are fingerprinted per tenant and job type, so one tenant's broken
  integration is one issue however many jobs fail, and not merged with another tenant's.
- Everything goes through saas_platform.observability.scrub on the way out, breadcrumbs included.
  Breadcrumbs are scrubbed there, when an event carries them, not as each is recorded: a task
  records several (its log lines, queries, Redis commands) and almost never sends an event, and
  scrubbing each as it came cost more than the rest of the observability together
  (bench.observability_overhead).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import sentry_sdk
from django.core.exceptions import ImproperlyConfigured
from saas_platform.observability.scrub import scrub_event
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.integrations.redis import RedisIntegration
from sentry_sdk.utils import BadDsn

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
) -> None:
    try:
        sentry_sdk.init(
            dsn=dsn,
            environment=environment,
            release=release or _release(),
            # Errors, not traces: no trace headers on every message the dispatcher sends, no
            # spans for Django's signals, and no breadcrumb per Redis command (the dispatcher
            # and heartbeats send thousands; they cost CPU per task and tell on-call little).
            integrations=[
                DjangoIntegration(signals_spans=False),
                CeleryIntegration(monitor_beat_tasks=False, propagate_traces=False),
            ],
            disabled_integrations=[RedisIntegration()],
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
