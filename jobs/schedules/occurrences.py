"""Occurrences of schedules, each run once, in the active tenant (the beat calls this with every
occurrence of a tenant due in one tick).

An occurrence is recorded in the same transaction as its job: ScheduleRun's unique
(schedule, due_at) key, the schedule row locked while deciding, and `last_due_at` only moving
forward make a restarted beat, or two beats at the edge of the lease, run it at most once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from saas_platform.lib.db import connection, schema_search_path_local
from saas_platform.lib.telemetry import context_line

from jobs.catalogue import JobArgsError, UnknownJobType
from jobs.models import FINAL_STATUSES, Job, Overlap, Schedule, ScheduleRun, ScheduleRunOutcome
from jobs.services.submission import (
    JobRequest,
    JobSubmitError,
    job_build,
    job_submit,
    jobs_accept,
    jobs_announce_accepted,
    jobs_insert_sql,
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


_Done = tuple[Due, ScheduleRunOutcome, Job | None, str]


def _run_together(dues: list[Due]) -> dict[int, Result]:
    now = timezone.now()
    with transaction.atomic():
        results, done = _settle(dues, _lock([due.schedule_id for due in dues]))
        if done:
            jobs_accept(_jobs(done))  # before the occurrences that point at them
            _record(done, now)
    _log(done, connection.schema_name)
    return results


def _settle(dues: list[Due], locked: dict[int, _Locked]) -> tuple[dict[int, Result], list[_Done]]:
    """What becomes of each occurrence, its schedule locked: the result of those that do
    nothing, and the outcome (and job, built) of those recorded."""
    results: dict[int, Result] = {}
    done: list[_Done] = []
    for due in dues:
        schedule = locked.get(due.schedule_id)
        if schedule is None:
            results[due.schedule_id] = Result.GONE
        elif not schedule.enabled:
            results[due.schedule_id] = Result.DISABLED
        elif schedule.last_due_at is not None and schedule.last_due_at >= due.due_at:
            results[due.schedule_id] = Result.ALREADY_DONE
        else:
            outcome, job, error = _decide(schedule, due)
            results[due.schedule_id] = Result(outcome.value)
            done.append((due, outcome, job, error))
    return results, done


def _jobs(done: list[_Done]) -> list[Job]:
    return [job for _, _, job, _ in done if job is not None]


def _log(done: list[_Done], schema: str) -> None:
    """One line per occurrence, as Celery's beat logs each task it sends."""
    for due, outcome, job, error in done:
        with context_line(tenant=schema, schedule=due.schedule_id):
            if error:
                logger.warning(
                    "schedule %s of tenant %s: occurrence %s not submitted: %s",
                    due.schedule_id, schema, due.due_at.isoformat(), error,
                )  # fmt: skip
            logger.info(
                "schedule %s of tenant %s: occurrence %s %s%s",
                due.schedule_id, schema, due.due_at.isoformat(), outcome.value,
                f" as job {job.id}" if job is not None else "",
            )  # fmt: skip


@dataclass(frozen=True)
class TenantDues:
    """A tenant's occurrences to run, for occurrences_run_across."""

    tenant_id: int
    schema_name: str
    dues: list[Due]


def occurrences_run_across(batch: list[TenantDues]) -> dict[int, dict[int, Result]]:
    """occurrences_run for several tenants at once, whichever is active: the results by tenant
    id, then by schedule id.

    One transaction and three round trips for all of them (the tenants' locks in one query
    string, each statement behind its tenant's SET LOCAL search_path; then every tenant's jobs
    and records; then the commit) and one Redis round trip announcing every job: at 1,000
    tenants with an every-second schedule each, the beat's cost was a tenant's round trips
    (six to PostgreSQL, one to Redis), not its occurrences.

    Raises whatever fails, and then nothing is recorded: a tenant's schema gone, or another beat
    that recorded one of these first (IntegrityError). The caller runs each tenant on its own
    then (occurrences_run), which tells which tenant it was and what became of the others.
    Locks are taken in (tenant, schedule id) order, so two beats never deadlock.
    """
    batch = sorted(batch, key=lambda item: item.tenant_id)
    now = timezone.now()
    results: dict[int, dict[int, Result]] = {}
    done: dict[int, list[_Done]] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        sql, params = "", []
        for item in batch:
            sql += schema_search_path_local(item.schema_name) + _LOCK.format(**_tables()) + ";"
            params += _lock_params([due.schedule_id for due in item.dues])
        cursor.execute(sql + _active_again(), params)
        for item in batch:
            locked = _locked(_next_rows(cursor))
            results[item.tenant_id], done[item.tenant_id] = _settle(item.dues, locked)
        sql, params = "", []
        for item in batch:
            if not done[item.tenant_id]:
                continue
            sql += schema_search_path_local(item.schema_name)
            jobs = _jobs(done[item.tenant_id])
            if jobs:  # before the occurrences that point at them
                insert, values = jobs_insert_sql(jobs)
                sql, params = sql + insert + "; ", params + values
            sql += _RECORD.format(**_tables()) + "; "
            params += _record_params(done[item.tenant_id], now)
        if sql:
            cursor.execute(sql + _active_again(), params)
            jobs_announce_accepted({tid: _jobs(items) for tid, items in done.items()})
    for item in batch:
        _log(done[item.tenant_id], item.schema_name)
    return results


def _active_again() -> str:
    # django-tenants believes the session's search_path is the active schema's: make it so.
    return schema_search_path_local(connection.schema_name)


def _next_rows(cursor: Any) -> list[tuple[Any, ...]]:
    """The rows of the next statement of a query string that returns any (past the SETs)."""
    while cursor.description is None:
        if not cursor.nextset():
            raise RuntimeError("fewer results than statements")
    rows = list(cursor.fetchall())
    cursor.nextset()
    return rows


# The beat runs these two statements for every tenant with an occurrence due, once a second for
# a tenant with an every-second schedule: written in SQL rather than through the ORM, whose
# compiling of a select_related lock (the last job's whole row, to read its status), a
# bulk_update (a CASE WHEN per row and field) and two more statements cost most of a tenant's
# batch. Measured in one run each way: a burst of 735 occurrences over 20 tenants 1,750-1,930
# a second against 900-1,250 through the ORM; 200 tenants of one occurrence each 5.6 against
# 6.6 ms a tenant.
_LOCK = """
SELECT s.id, s.type, s.args, s.overlap, s.last_due_at, t.enabled,
       j.status IS NOT NULL AND NOT j.status = ANY(%s) AS previous_unfinished
FROM {schedule} AS s
JOIN {task} AS t ON t.id = s.periodic_task_id
LEFT JOIN {job} AS j ON j.id = s.last_job_id
WHERE s.id = ANY(%s)
ORDER BY s.id
FOR UPDATE OF s
"""

# The occurrences, the schedules moved on (last_due_at; last_job when one was made) and their
# periodic tasks (last run, run count; a clocked one-off disabled, as in django-celery-beat), in
# one statement. An UPDATE rather than PeriodicTask.save(): django-celery-beat's save signal
# would also rewrite its change-tracking row, which nothing reads (the beat learns of changes
# from jobs.schedules.changes).
_RECORD = """
WITH v AS (
    SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::uuid[], %s::text[])
        AS v(id, due, outcome, job, error)
), runs AS (
    INSERT INTO {run} (schedule_id, due_at, outcome, job_id, error, created_at)
    SELECT id, due, outcome, job, error, %s FROM v
), moved AS (
    UPDATE {schedule} AS s
    SET last_due_at = v.due, last_job_id = coalesce(v.job, s.last_job_id), updated_at = %s
    FROM v WHERE s.id = v.id
    RETURNING s.periodic_task_id
)
UPDATE {task} AS t
SET last_run_at = %s, total_run_count = t.total_run_count + 1, enabled = NOT t.one_off
FROM moved WHERE t.id = moved.periodic_task_id
"""


@dataclass(frozen=True)
class _Locked:
    """What deciding an occurrence reads of its schedule, locked."""

    id: int
    type: str
    args: dict[str, Any]
    overlap: str
    last_due_at: datetime | None
    enabled: bool
    previous_unfinished: bool  # its last job has not ended


def _tables() -> dict[str, str]:
    quote = connection.ops.quote_name
    return {
        "schedule": quote(Schedule._meta.db_table),
        "task": quote(PeriodicTask._meta.db_table),
        "job": quote(Job._meta.db_table),
        "run": quote(ScheduleRun._meta.db_table),
    }


def _lock(ids: list[int]) -> dict[int, _Locked]:
    """The schedules `ids` that still exist, locked (in id order: two beats at the lease's edge
    lock alike and never deadlock)."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK.format(**_tables()), _lock_params(ids))
        return _locked(cursor.fetchall())


def _lock_params(ids: list[int]) -> list[Any]:
    return [list(FINAL_STATUSES), ids]


def _locked(rows: list[tuple[Any, ...]]) -> dict[int, _Locked]:
    # jsonb comes back as text: Django leaves decoding to JSONField, which a raw cursor skips.
    return {
        row[0]: _Locked(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6])
        for row in rows
    }


def _record(done: list[_Done], now: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_RECORD.format(**_tables()), _record_params(done, now))


def _record_params(done: list[_Done], now: datetime) -> list[Any]:
    return [
        [due.schedule_id for due, _, _, _ in done],
        [due.due_at for due, _, _, _ in done],
        [outcome.value for _, outcome, _, _ in done],
        [job.id if job is not None else None for _, _, job, _ in done],
        [error for _, _, _, error in done],
        now,
        now,
        now,
    ]


def _decide(schedule: _Locked, due: Due) -> tuple[ScheduleRunOutcome, Job | None, str]:
    """The occurrence's outcome by the overlap policy, and its job (built, not written)."""
    if schedule.previous_unfinished and schedule.overlap != Overlap.ALLOW:
        if schedule.overlap == Overlap.BUFFER_ONE:
            return ScheduleRunOutcome.BUFFERED, None, ""
        return ScheduleRunOutcome.SKIPPED_OVERLAP, None, ""
    try:
        job = job_build(
            request=JobRequest(type=schedule.type, args=schedule.args),
            submitted_by=f"schedule:{schedule.id}",
            schedule_id=schedule.id,
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
