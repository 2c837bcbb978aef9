"""Attempts are history: every attempt of a job has a row of its own, written by the same
statements that move the job, and a retry adds attempts instead of erasing them."""

from __future__ import annotations

from datetime import timedelta

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.app.task import Context
from django.utils import timezone
from saas_platform.celery_app import app

from jobs.catalogue import job_type_get
from jobs.models import Job, JobAttempt
from jobs.selectors import job_attempts
from jobs.services.transitions import (
    job_cancel,
    job_claim,
    job_fail,
    job_requeue_for_retry,
    job_retry,
)
from tests.jobs_helpers import job_in, queued_job, run_attempt, run_until_final


def _attempts(tenant, job: Job) -> list[JobAttempt]:
    with tenant:
        return list(job_attempts(job_id=job.id))


def _failing(tenant) -> Job:
    return queued_job(tenant, "demo.fail", {"message": "boom"}, max_attempts=3)


def _request(tenant, job: Job) -> Context:
    return Context(
        id=str(job.task_id), task=job.type, args=[str(job.id)], kwargs={}, hostname="w1@host",
        tenant_id=tenant.pk, tenant_schema=tenant.schema_name, periodic_task_name=None,
    )  # fmt: skip


def test_the_claim_records_attempt_one_as_submitted_and_running(tenant_db):
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    with tenant_db.acme:
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
        claimed = Job.objects.get(id=job.id)
    [attempt] = _attempts(tenant_db.acme, job)
    assert (attempt.number, attempt.cause, attempt.outcome) == (1, "submitted", "running")
    assert attempt.task_id == job.task_id
    assert attempt.worker == claimed.worker
    assert attempt.queued_at == job.queued_at
    assert attempt.started_at == claimed.started_at
    assert attempt.finished_at is None
    assert (attempt.error, attempt.traceback) == ("", "")


def test_a_refused_claim_records_no_attempt(tenant_db):
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    with tenant_db.acme:
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
        assert job_claim(job_id=str(job.id), task_id=str(job.task_id)) is None  # a duplicate
    assert len(_attempts(tenant_db.acme, job)) == 1


def test_a_failing_job_leaves_attempts_retrying_then_failed_with_error_and_traceback(tenant_db):
    job = _failing(tenant_db.acme)
    run_until_final(tenant_db.acme, job)
    attempts = _attempts(tenant_db.acme, job)
    assert [(a.number, a.cause, a.outcome) for a in attempts] == [
        (1, "submitted", "retrying"),
        (2, "retry", "retrying"),
        (3, "retry", "failed"),
    ]
    for attempt in attempts:
        assert attempt.error == "jobs.catalogue.demo_fail.DemoFailure: boom"
        assert attempt.traceback.startswith("Traceback (most recent call last):")
        assert "raise DemoFailure" in attempt.traceback
        assert attempt.finished_at is not None
        assert attempt.finished_at >= attempt.started_at
    # A retry waits for its countdown: it counts as queued from when it is due.
    assert attempts[1].queued_at >= attempts[0].finished_at
    with tenant_db.acme:
        final = Job.objects.get(id=job.id)
    assert (final.status, final.attempts, final.error) == ("failed", 3, attempts[2].error)


def test_a_redelivered_reclaim_marks_the_previous_attempt_lost(tenant_db):
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    with tenant_db.acme:
        job_claim(job_id=str(job.id), task_id=str(job.task_id), worker="first#1")
        job_claim(job_id=str(job.id), task_id=str(job.task_id), worker="second#2", redelivered=True)
        reclaimed = Job.objects.get(id=job.id)
    lost, again = _attempts(tenant_db.acme, job)
    assert (lost.number, lost.outcome, lost.worker.split(":")[0]) == (1, "lost", "first#1")
    assert "worker lost" in lost.error
    assert lost.finished_at == again.started_at
    assert (again.number, again.cause, again.outcome) == (2, "redelivered", "running")
    assert again.worker.split(":")[0] == "second#2"
    assert (reclaimed.attempts, reclaimed.attempt_cause) == (2, "redelivered")


def test_a_user_retry_keeps_the_history_and_grants_a_fresh_budget(tenant_db):
    job = _failing(tenant_db.acme)
    run_until_final(tenant_db.acme, job)
    with tenant_db.acme:
        retried = job_retry(job=Job.objects.get(id=job.id))
    assert (retried.status, retried.attempts, retried.max_attempts) == ("queued", 3, 6)
    assert retried.attempt_cause == "user_retry"
    assert (retried.error, retried.started_at, retried.finished_at) == ("", None, None)
    assert len(_attempts(tenant_db.acme, job)) == 3  # nothing erased
    before = timezone.now()
    run_attempt(tenant_db.acme, job)
    # The new budget's backoff starts over: the first automatic retry waits as the first did.
    rescheduled = job_in(tenant_db.acme, job.id)
    countdown = job_type_get("demo.fail").retry_countdown(1)
    assert rescheduled.status == "scheduled"
    assert before + timedelta(seconds=countdown) <= rescheduled.run_at
    assert rescheduled.run_at <= timezone.now() + timedelta(seconds=countdown)
    run_until_final(tenant_db.acme, job)
    attempts = _attempts(tenant_db.acme, job)
    assert [(a.number, a.cause, a.outcome) for a in attempts] == [
        (1, "submitted", "retrying"),
        (2, "retry", "retrying"),
        (3, "retry", "failed"),
        (4, "user_retry", "retrying"),
        (5, "retry", "retrying"),
        (6, "retry", "failed"),
    ]
    assert attempts[3].task_id == retried.task_id != job.task_id
    with tenant_db.acme:
        final = Job.objects.get(id=job.id)
    assert (final.status, final.attempts) == ("failed", 6)


def test_cancelling_a_running_job_ends_its_attempt_cancelled(tenant_db):
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    with tenant_db.acme:
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
        job_cancel(job=Job.objects.get(id=job.id))
    [attempt] = _attempts(tenant_db.acme, job)
    assert (attempt.outcome, attempt.error) == ("cancelled", "cancelled")
    assert attempt.finished_at is not None


def test_a_hard_time_limit_recorded_by_the_main_process_times_the_attempt_out(tenant_db):
    job = queued_job(tenant_db.acme, "demo.sleep", {"seconds": 30})
    with tenant_db.acme:
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
    app.backend.mark_as_failure(
        str(job.task_id), TimeLimitExceeded(1.0), request=_request(tenant_db.acme, job)
    )
    [attempt] = _attempts(tenant_db.acme, job)
    assert (attempt.outcome, attempt.error) == ("timed_out", "TimeLimitExceeded: 1.0")
    with tenant_db.acme:
        assert Job.objects.get(id=job.id).status == "failed"


def test_a_lost_worker_recorded_by_the_main_process_marks_the_attempt_lost(tenant_db):
    job = queued_job(tenant_db.acme, "demo.sleep", {"seconds": 30})
    with tenant_db.acme:
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
    app.backend.mark_as_failure(
        str(job.task_id),
        WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL)."),
        request=_request(tenant_db.acme, job),
    )
    [attempt] = _attempts(tenant_db.acme, job)
    assert attempt.outcome == "lost"
    assert attempt.error.startswith("WorkerLostError: Worker exited prematurely")


def test_a_failure_stored_after_the_job_ended_leaves_its_attempt_alone(tenant_db):
    job = _failing(tenant_db.acme)
    run_until_final(tenant_db.acme, job)
    with tenant_db.acme:
        job.refresh_from_db()
    # Celery stores the task's own FAILURE after the runner recorded it.
    app.backend.mark_as_failure(
        str(job.task_id), RuntimeError("late"), request=_request(tenant_db.acme, job)
    )
    assert _attempts(tenant_db.acme, job)[-1].error == "jobs.catalogue.demo_fail.DemoFailure: boom"


def test_a_late_failure_or_retry_of_an_attempt_taken_over_changes_nothing(tenant_db):
    # Its worker was declared dead and another claimer holds the job now: the old attempt's
    # end (a failure for good or a retry) must not end or reschedule the new attempt's job.
    job = _failing(tenant_db.acme)
    with tenant_db.acme:
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
        Job.objects.filter(id=job.id).update(worker="other-incarnation:4242")
        ids = {"job_id": str(job.id), "task_id": str(job.task_id)}
        assert not job_fail(**ids, error="late")
        assert not job_requeue_for_retry(**ids, error="late", countdown=1)
    now = job_in(tenant_db.acme, job.id)
    assert (now.status, now.error, now.worker) == ("running", "", "other-incarnation:4242")
    # Left running under a worker nobody runs, a later worker's reconciler would rescue and run it.
    with tenant_db.acme:
        Job.objects.filter(id=job.id).update(status="cancelled")
