"""Submitting jobs and waiting for them, for tests that run real workers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from jobs.catalogue import job_type_get
from jobs.models import FINAL_STATUSES, Job
from jobs.services.submission import JobRequest, job_submit
from tests.workers import wait_for


def submit(
    tenant: Any, job_type: str, args: dict[str, Any], *, queue: str | None = None, **options: Any
) -> Job:
    """Submit as an operator would. `queue` is a test-only path to a broker queue of the test's
    own, so that only the worker the test started can run the job: the product always uses the
    job type's queue (a tenant never names one)."""
    request = JobRequest(type=job_type, args=args, **options)
    with tenant:
        if queue is None or queue == job_type_get(job_type).queue:
            return job_submit(request=request, submitted_by="operator")
        with transaction.atomic():
            job = job_submit(request=request, submitted_by="operator")
            # The message is published when this block commits, from this Job object: the object
            # and the row (which the reconciler would republish from) both name the queue by then.
            Job.objects.filter(id=job.id).update(queue=queue)
            job.queue = queue
        return job


def job_in(tenant: Any, job_id: Any) -> Job:
    with tenant:
        return Job.objects.get(id=job_id)


def wait_final(tenant: Any, job_ids: Iterable[Any], *, timeout: float = 60) -> list[Job]:
    ids = [str(i) for i in job_ids]

    def all_final() -> list[Job] | None:
        with tenant:
            jobs = list(Job.objects.filter(id__in=ids))
        done = [j for j in jobs if j.status in FINAL_STATUSES]
        return jobs if len(done) == len(ids) else None

    result: list[Job] = wait_for(all_final, timeout=timeout, what=f"{len(ids)} jobs to finish")
    return result
