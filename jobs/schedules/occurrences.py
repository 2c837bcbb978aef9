"""Occurrences of schedules, each run once, in the active tenant (the beat calls this with every
occurrence of a tenant due in one tick).

An occurrence is recorded in the same transaction as its job: ScheduleRun's unique
(schedule, due_at) key, the schedule row locked while deciding, and `last_due_at` only moving
forward make a restarted beat, or two beats at the edge of the lease, run it at most once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from saas_platform.lib.db import connection
from saas_platform.lib.telemetry import context_line

from jobs.catalogue import JobArgsError, UnknownJobType
from jobs.models import Job, Overlap, Schedule, ScheduleRun, ScheduleRunOutcome
from jobs.services.submission import (
    JobRequest,
    JobSubmitError,
    job_build,
    job_submit,
    jobs_accept,
)

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


@dataclass(frozen=True)
class Due:
    """An occurrence to run: its schedule and its nominal due time."""

    schedule_id: int
    due_at: datetime


def occurrence_run(*, schedule_id: int, due_at: datetime) -> Result:
    """Run the occurrence of `schedule_id` due at `due_at`, at most once (occurrences_run)."""
    return occurrences_run([Due(schedule_id, due_at)])[schedule_id]


def occurrences_run(dues: list[Due]) -> dict[int, Result]:
    """Run the given occurrences of the active tenant's schedules (one per schedule), each at
    most once, in one transaction; the result of each by schedule id.

    1. Lock the schedule rows (in id order: two beats at the lease's edge lock alike and never
       deadlock); a deleted, paused or already-passed schedule does nothing.
    2. Apply each one's overlap policy against its previous job.
    3. Build each job through the normal service (validated as any submission; one refused is
       recorded as failed and does not stop the others), write them and the occurrences, move the
       schedules on: one statement each for all of them, so a tenant's occurrences due together
       (every minute-aligned cron at :00) cost a transaction, not one each.

    If another beat recorded one of them first (the unique (schedule, due_at) key), the batch
    rolls back and each runs again on its own, so only that one is "already done".
    """
    if not dues:
        return {}
    try:
        return _run_together(dues)
    except IntegrityError:
        if len(dues) == 1:
            return {dues[0].schedule_id: Result.ALREADY_DONE}
    results: dict[int, Result] = {}
    for due in dues:
        results.update(occurrences_run([due]))
    return results


def _run_together(dues: list[Due]) -> dict[int, Result]:
    now = timezone.now()
    results: dict[int, Result] = {}
    done: list[tuple[Due, ScheduleRunOutcome, Job | None, str]] = []
    with transaction.atomic():
        locked = {
            schedule.pk: schedule
            for schedule in Schedule.objects.select_for_update(of=("self",))
            .select_related("periodic_task", "last_job")
            .filter(pk__in=[due.schedule_id for due in dues])
            .order_by("pk")
        }
        runs: list[ScheduleRun] = []
        jobs: list[Job] = []
        moved: list[Schedule] = []
        for due in dues:
            schedule = locked.get(due.schedule_id)
            if schedule is None:
                results[due.schedule_id] = Result.GONE
                continue
            if not schedule.periodic_task.enabled:
                results[due.schedule_id] = Result.DISABLED
                continue
            if schedule.last_due_at is not None and schedule.last_due_at >= due.due_at:
                results[due.schedule_id] = Result.ALREADY_DONE
                continue
            outcome, job, error = _decide(schedule, due)
            if job is not None:
                jobs.append(job)
                schedule.last_job = job
            runs.append(
                ScheduleRun(schedule=schedule, due_at=due.due_at, outcome=outcome, job=job,
                            error=error)
            )  # fmt: skip
            schedule.last_due_at, schedule.updated_at = due.due_at, now
            moved.append(schedule)
            done.append((due, outcome, job, error))
        if moved:
            jobs_accept(jobs)  # before the runs that point at them
            ScheduleRun.objects.bulk_create(runs)
            _schedules_move(moved, now)
            # An UPDATE rather than save(): django-celery-beat's save signal would also rewrite
            # its change-tracking row, two statements more per occurrence that nothing reads
            # (the beat learns of changes from jobs.schedules.changes).
            PeriodicTask.objects.filter(pk__in=[s.periodic_task_id for s in moved]).update(
                last_run_at=now,
                total_run_count=F("total_run_count") + 1,
                # A clocked schedule runs once, as in django-celery-beat.
                enabled=Case(When(one_off=True, then=Value(False)), default=Value(True)),
            )
    # One line per occurrence, as Celery's beat logs each task it sends.
    for due, outcome, job, error in done:
        results[due.schedule_id] = Result(outcome.value)
        with context_line(schedule=due.schedule_id):
            if error:
                logger.warning(
                    "schedule %s of tenant %s: occurrence %s not submitted: %s",
                    due.schedule_id, connection.schema_name, due.due_at.isoformat(), error,
                )  # fmt: skip
            logger.info(
                "schedule %s of tenant %s: occurrence %s %s%s",
                due.schedule_id, connection.schema_name, due.due_at.isoformat(), outcome.value,
                f" as job {job.id}" if job is not None else "",
            )  # fmt: skip
    return results


# One UPDATE from arrays rather than QuerySet.bulk_update, whose CASE WHEN per row and field
# the ORM builds as expressions: measured, it was half the batch's time (1.5 ms a row).
_MOVE = """
UPDATE {table} AS s SET {last_due} = v.due, {last_job} = v.job, {updated} = %s
FROM unnest(%s::bigint[], %s::timestamptz[], %s::uuid[]) AS v(id, due, job)
WHERE s.{pk} = v.id
"""


def _schedules_move(moved: list[Schedule], now: datetime) -> None:
    """Write the moved schedules' last_due_at and last_job (the new job, or the one before)."""
    meta = Schedule._meta
    statement = _MOVE.format(
        table=connection.ops.quote_name(meta.db_table),
        last_due=meta.get_field("last_due_at").column,
        last_job=meta.get_field("last_job").column,
        updated=meta.get_field("updated_at").column,
        pk=meta.pk.column,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            statement,
            [
                now,
                [schedule.pk for schedule in moved],
                [schedule.last_due_at for schedule in moved],
                [schedule.last_job_id for schedule in moved],
            ],
        )


def _decide(schedule: Schedule, due: Due) -> tuple[ScheduleRunOutcome, Job | None, str]:
    """The occurrence's outcome by the overlap policy, and its job (built, not written)."""
    previous = schedule.last_job
    if previous is not None and not previous.is_final and schedule.overlap != Overlap.ALLOW:
        if schedule.overlap == Overlap.BUFFER_ONE:
            return ScheduleRunOutcome.BUFFERED, None, ""
        return ScheduleRunOutcome.SKIPPED_OVERLAP, None, ""
    try:
        job = job_build(
            request=JobRequest(type=schedule.type, args=schedule.args),
            submitted_by=f"schedule:{schedule.pk}",
            schedule_id=schedule.pk,
        )
    except (UnknownJobType, JobArgsError, JobSubmitError) as exc:
        # A job type removed from the catalogue, or arguments a newer schema refuses.
        return ScheduleRunOutcome.FAILED, None, f"{type(exc).__name__}: {exc}"
    return ScheduleRunOutcome.SUBMITTED, job, ""


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
