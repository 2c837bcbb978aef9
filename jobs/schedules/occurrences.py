"""One occurrence of a schedule, run once, in the active tenant (the beat calls this).

The occurrence is recorded in the same transaction as its job: ScheduleRun's unique
(schedule, due_at) key, the schedule row locked while deciding, and `last_due_at` only moving
forward make a restarted beat, or two beats at the edge of the lease, run it at most once.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from saas_platform.lib.db import connection

from jobs.catalogue import JobArgsError, UnknownJobType
from jobs.models import Job, Overlap, Schedule, ScheduleRun, ScheduleRunOutcome
from jobs.services.submission import JobRequest, JobSubmitError, job_submit

logger = logging.getLogger(__name__)


class Result(StrEnum):
    SUBMITTED = "submitted"
    SKIPPED_OVERLAP = "skipped_overlap"
    BUFFERED = "buffered"
    FAILED = "failed"  # the submission was refused: recorded, logged, the schedule goes on
    ALREADY_DONE = "already_done"  # another beat (or this one, before a restart) handled it
    GONE = "gone"  # deleted meanwhile
    DISABLED = "disabled"  # paused meanwhile


def _submit(schedule: Schedule) -> Job:
    return job_submit(
        request=JobRequest(type=schedule.type, args=schedule.args),
        submitted_by=f"schedule:{schedule.pk}",
        schedule_id=schedule.pk,
    )


def occurrence_run(*, schedule_id: int, due_at: datetime) -> Result:
    """Run the occurrence of `schedule_id` due at `due_at` (its nominal time), at most once.

    1. Lock the schedule row; a deleted, paused or already-passed schedule does nothing.
    2. Apply the overlap policy against the schedule's previous job.
    3. Submit the job through the normal service (validated as any submission, announced to the
       dispatcher after commit), record the occurrence, move the schedule on.
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            schedule = (
                Schedule.objects.select_for_update(of=("self",))
                .select_related("periodic_task", "last_job")
                .filter(pk=schedule_id)
                .first()
            )
            if schedule is None:
                return Result.GONE
            task = schedule.periodic_task
            if not task.enabled:
                return Result.DISABLED
            if schedule.last_due_at is not None and schedule.last_due_at >= due_at:
                return Result.ALREADY_DONE
            previous = schedule.last_job
            job: Job | None = None
            error = ""
            if previous is not None and not previous.is_final and schedule.overlap != Overlap.ALLOW:
                outcome = (
                    ScheduleRunOutcome.BUFFERED
                    if schedule.overlap == Overlap.BUFFER_ONE
                    else ScheduleRunOutcome.SKIPPED_OVERLAP
                )
            else:
                try:
                    job = _submit(schedule)
                    outcome = ScheduleRunOutcome.SUBMITTED
                except (UnknownJobType, JobArgsError, JobSubmitError) as exc:
                    # A job type removed from the catalogue, or arguments a newer schema refuses.
                    outcome, error = ScheduleRunOutcome.FAILED, f"{type(exc).__name__}: {exc}"
                    logger.warning(
                        "schedule %s of tenant %s: occurrence %s not submitted: %s",
                        schedule_id, connection.schema_name, due_at.isoformat(), error,
                    )  # fmt: skip
            ScheduleRun.objects.create(
                schedule=schedule, due_at=due_at, outcome=outcome, job=job, error=error
            )
            schedule.last_due_at = due_at
            update = ["last_due_at", "updated_at"]
            if job is not None:
                schedule.last_job = job
                update.append("last_job")
            schedule.save(update_fields=update)
            # An UPDATE rather than save(): django-celery-beat's save signal would also rewrite
            # its change-tracking row, two statements more per occurrence that nothing reads
            # (the beat learns of changes from jobs.schedules.changes).
            PeriodicTask.objects.filter(pk=task.pk).update(
                last_run_at=now,
                total_run_count=F("total_run_count") + 1,
                # A clocked schedule runs once, as in django-celery-beat.
                enabled=not task.one_off,
            )
    except IntegrityError:
        # The unique (schedule, due_at): another beat recorded this occurrence first.
        return Result.ALREADY_DONE
    # One line per occurrence, as Celery's beat logs each task it sends.
    logger.info(
        "schedule %s of tenant %s: occurrence %s %s%s",
        schedule_id, connection.schema_name, due_at.isoformat(), outcome.value,
        f" as job {job.id}" if job is not None else "",
    )  # fmt: skip
    return Result(outcome.value)


def buffered_release(*, schedule_id: int) -> bool:
    """Submit the occurrence a `buffer_one` schedule holds, once its previous job has ended.

    True when nothing is held any more (released now, or nothing was), False while it waits.
    """
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update(of=("self",))
            .select_related("last_job")
            .filter(pk=schedule_id)
            .first()
        )
        if schedule is None:
            return True
        held = (
            ScheduleRun.objects.filter(schedule=schedule, outcome=ScheduleRunOutcome.BUFFERED)
            .order_by("-due_at")
            .first()
        )
        if held is None:
            return True
        if schedule.last_job is not None and not schedule.last_job.is_final:
            return False
        try:
            job = _submit(schedule)
        except (UnknownJobType, JobArgsError, JobSubmitError) as exc:
            held.outcome, held.error = ScheduleRunOutcome.FAILED, f"{type(exc).__name__}: {exc}"
            held.save(update_fields=["outcome", "error"])
            return True
        held.outcome, held.job = ScheduleRunOutcome.SUBMITTED, job
        held.save(update_fields=["outcome", "job"])
        schedule.last_job = job
        schedule.save(update_fields=["last_job", "updated_at"])
        return True
