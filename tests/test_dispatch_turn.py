"""One dispatcher turn (jobs.services.dispatch), in this process: what it sends and what it keeps."""

from __future__ import annotations

import copy
import uuid

import pytest
from django.utils import timezone
from saas_platform.lib.state_redis import state_redis

from jobs.models import Job, JobStatus
from jobs.services.dispatch import inflight_key, tenant_dispatch_turn
from jobs.services.transitions import job_cancel
from tests.jobs_helpers import job_in, queued_job, submit


@pytest.fixture
def queue(tenant_db):
    """A queue no worker consumes: what is sent stays there. Afterwards its jobs are ended and
    their slots given back, or they would hold the shared tenant's concurrency slots (a job sent
    counts as in flight) and starve every later test of that tenant."""
    name = f"turn-{uuid.uuid4().hex[:8]}"
    yield name
    tenant = tenant_db.initech
    with tenant:
        jobs = Job.objects.filter(queue=name)
        task_ids = [str(task_id) for task_id in jobs.values_list("task_id", flat=True)]
        jobs.update(status=JobStatus.CANCELLED, finished_at=timezone.now())
    if task_ids:
        state_redis().srem(inflight_key(tenant.pk), *task_ids)


def _turn(tenant, queue: str):
    state_redis().delete(inflight_key(tenant.pk))  # other tests' jobs hold no slots here
    with tenant:
        return tenant_dispatch_turn(tenant_id=tenant.pk, queue=queue, room=10, alone=True)


def test_a_suspended_tenants_jobs_wait_until_it_is_resumed(tenant_db, queue):
    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, queue=queue)
    # Suspended in memory only: the shared actor stays active for every other test.
    suspended = copy.copy(tenant_db.initech)
    suspended.is_active = False
    result = _turn(suspended, queue)
    assert result.sent == 0
    assert result.set_aside_until is not None
    assert result.set_aside_until > timezone.now().timestamp()
    assert job_in(tenant_db.initech, job.id).published_at is None
    assert _turn(tenant_db.initech, queue).sent == 1
    assert job_in(tenant_db.initech, job.id).published_at is not None


def test_a_job_of_a_type_this_worker_does_not_know_waits_without_blocking_the_line(
    tenant_db, queue
):
    # Its type may be new (a rolling deploy: the dispatcher's worker runs the older catalogue):
    # it waits for a worker that knows it, and the jobs behind it go meanwhile.
    unknown = queued_job(tenant_db.initech, "demo.from_the_future", {})
    with tenant_db.initech:
        Job.objects.filter(id=unknown.id).update(queue=queue, priority=9)  # first in line
    behind = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, queue=queue)
    result = _turn(tenant_db.initech, queue)
    waiting = job_in(tenant_db.initech, unknown.id)
    assert (waiting.status, waiting.attempts, waiting.published_at) == (JobStatus.QUEUED, 0, None)
    assert result.sent == 1
    assert job_in(tenant_db.initech, behind.id).published_at is not None


def test_cancelling_a_sent_job_frees_its_concurrency_slot_at_once(tenant_db, queue):
    # Sent, it holds a slot until it ends; cancelled, it never runs: the slot is free now, not
    # when a worker gets to its revoked message (no worker consumes this queue at all).
    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, queue=queue)
    assert _turn(tenant_db.initech, queue).sent == 1
    sent = job_in(tenant_db.initech, job.id)
    key = inflight_key(tenant_db.initech.pk)
    assert state_redis().sismember(key, str(sent.task_id))
    with tenant_db.initech:
        job_cancel(job=sent)
    assert not state_redis().sismember(key, str(sent.task_id))
