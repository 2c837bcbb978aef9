"""jobs.retention: finished jobs past the plan's retention are deleted with their attempts and
result rows, per tenant and in batches; unfinished and recent jobs stay; only recently active
tenants are visited.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_celery_results.models import TaskResult

from billing.models import UsageDay
from jobs.models import Job, JobAttempt, JobStatus
from jobs.retention import retention_sweep
from tests.jobs_helpers import queued_job

RETENTION_DAYS = 7  # the free plan's


@pytest.fixture(scope="module")
def kept(actors: Any, django_db_blocker: Any) -> Iterator[Any]:
    from billing.services import tenant_create_on_plan
    from tenants.models import Tenant

    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        tenant = tenant_create_on_plan(slug=f"r{uuid.uuid4().hex[:10]}", name="Retained").tenant
    yield tenant
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        Tenant.objects.filter(pk=tenant.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')


def _job(tenant: Any, *, age_days: float, status: str) -> Job:
    job = queued_job(tenant, "demo.add", {"x": 1, "y": 1})
    at = timezone.now() - timedelta(days=age_days)
    with tenant:
        finished = at if status != JobStatus.QUEUED else None
        Job.objects.filter(id=job.id).update(status=status, created_at=at, finished_at=finished)
        JobAttempt.objects.create(
            job_id=job.id, number=1, task_id=job.task_id, worker="w:1", cause="submitted",
            outcome="succeeded", queued_at=at, started_at=at, finished_at=finished,
        )  # fmt: skip
        TaskResult.objects.create(task_id=str(job.task_id), status="SUCCESS", result="2")
    return job


def _left(tenant: Any) -> tuple[set[str], int, int]:
    with tenant:
        return (
            {str(i) for i in Job.objects.values_list("id", flat=True)},
            JobAttempt.objects.count(),
            TaskResult.objects.count(),
        )


def test_expired_jobs_go_with_their_attempts_and_results_in_batches(tenant_db, kept):
    old = [_job(kept, age_days=RETENTION_DAYS + 2, status=JobStatus.SUCCEEDED) for _ in range(7)]
    old.append(_job(kept, age_days=RETENTION_DAYS + 3, status=JobStatus.FAILED))
    recent = _job(kept, age_days=RETENTION_DAYS - 1, status=JobStatus.SUCCEEDED)
    waiting = _job(kept, age_days=RETENTION_DAYS + 5, status=JobStatus.QUEUED)

    # Not counted lately: not visited, nothing deleted.
    result = retention_sweep(batch_size=3)
    assert kept.pk not in result.failed
    assert len(_left(kept)[0]) == 10

    UsageDay.objects.create(
        tenant=kept, day=timezone.now().date() - timedelta(days=RETENTION_DAYS),
        rolled_up_at=timezone.now(),
    )  # fmt: skip
    result = retention_sweep(batch_size=3)
    assert result.jobs_deleted >= len(old)
    ids, attempts, results = _left(kept)
    assert ids == {str(recent.id), str(waiting.id)}
    assert (attempts, results) == (2, 2)
    # Again: nothing more to do.
    before = _left(kept)
    retention_sweep(batch_size=3)
    assert _left(kept) == before
