"""Submitting jobs and waiting for them, for tests that run real workers."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from celery.exceptions import Retry
from django.db import transaction
from django.utils import timezone

from jobs.catalogue import job_type_get
from jobs.models import FINAL_STATUSES, Job, JobStatus
from jobs.runner import job_run_attempt
from jobs.selectors import WorkflowDetail, workflow_get_with_steps
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


def workflow_detail(tenant: Any, workflow_id: str) -> WorkflowDetail:
    """The workflow with its steps and their jobs, read in its tenant."""
    with tenant:
        detail = workflow_get_with_steps(workflow_id=workflow_id)
    assert detail is not None
    return detail


def wait_final(tenant: Any, job_ids: Iterable[Any], *, timeout: float = 60) -> list[Job]:
    ids = [str(i) for i in job_ids]

    def all_final() -> list[Job] | None:
        with tenant:
            jobs = list(Job.objects.filter(id__in=ids))
        done = [j for j in jobs if j.status in FINAL_STATUSES]
        return jobs if len(done) == len(ids) else None

    result: list[Job] = wait_for(all_final, timeout=timeout, what=f"{len(ids)} jobs to finish")
    return result


def queued_job(tenant: Any, job_type: str, args: dict[str, Any], **fields: Any) -> Job:
    """A committed, queued job that was never published: only the test runs its attempts."""
    with tenant:
        job = Job(type=job_type, args=args, queue="default", submitted_by="test", **fields)
        job.status = JobStatus.QUEUED
        job.task_id = job.id
        job.save(force_insert=True)
    return job


class InProcessTask:
    """Only what job_run_attempt reads from a bound Celery task; a retry is recorded, not sent.

    For tests of the runner's bookkeeping without a worker. Not Celery's eager mode: no Celery
    machinery runs at all, and tests of real behaviour use WorkerProcess.
    """

    def __init__(self, task_id: Any, *, redelivered: bool = False) -> None:
        self.request = SimpleNamespace(
            id=str(task_id), hostname="test@host", delivery_info={"redelivered": redelivered}
        )
        self.retried: dict[str, Any] = {}
        self.raised: BaseException | None = None

    def retry(self, **kwargs: Any) -> Retry:
        self.retried = kwargs
        return Retry("retry", exc=kwargs.get("exc"), when=kwargs.get("countdown"))


def run_attempt(tenant: Any, job: Job, *, redelivered: bool = False) -> InProcessTask:
    """One delivery of the job's current message to the runner, inside its tenant. What it
    raises (a retry, the job's error) is kept in `raised`, as Celery would catch it."""
    with tenant:
        task = InProcessTask(Job.objects.get(id=job.id).task_id, redelivered=redelivered)
        try:
            job_run_attempt(task, str(job.id))  # type: ignore[arg-type]
        except Exception as exc:
            task.raised = exc
    return task


def run_until_final(tenant: Any, job: Job, *, deliveries: int = 20) -> Job:
    """Deliver the job's message to the runner again and again (its retries) until it ends."""
    for _ in range(deliveries):
        current = job_in(tenant, job.id)
        if current.is_final:
            return current
        if current.status == JobStatus.SCHEDULED:
            # A retry waiting for its backoff: sent now, as the dispatcher would once it is due.
            with tenant:
                Job.objects.filter(id=job.id).update(
                    status=JobStatus.QUEUED, published_at=timezone.now()
                )
            current = job_in(tenant, job.id)
        run_attempt(tenant, current)
    raise AssertionError(f"the job did not end in {deliveries} deliveries")


def dispatch_now(tenant: Any, queue: str = "default", room: int = 100) -> int:
    """One dispatcher turn for the tenant and queue, in this process; returns how many it sent.

    For tests that need a message in the broker with no worker around (a dispatcher thread only
    sends to queues that live workers consume). The tenant's in-flight count is cleared first:
    other tests' jobs, sent and never run, would otherwise hold its concurrency slots.
    """
    from saas_platform.lib.state_redis import state_redis

    from jobs.services.dispatch import inflight_key, tenant_dispatch_turn

    state_redis().delete(inflight_key(tenant.pk))
    with tenant:
        return tenant_dispatch_turn(tenant_id=tenant.pk, queue=queue, room=room, alone=True).sent
