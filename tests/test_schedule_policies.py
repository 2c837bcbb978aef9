"""The per-schedule policies, driving the beat's book of entries (jobs.schedules.beat.TenantBook)
in this process against the real database: missed runs and the catch-up window, overlap, a
suspended tenant, a clocked one-off. (The beat as a process: tests/test_beat_schedules.py.)"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from jobs.models import Job, JobStatus, Schedule, ScheduleRun, ScheduleRunOutcome
from jobs.schedules.beat import TenantBook
from tests.api_client import call
from tests.schedule_helpers import fresh_tenant, schedule_create_via_api, tenant_on_plan


@pytest.fixture
def ent(tenant_db):
    return fresh_tenant("schedpolicy")


def _create(key: str, **body) -> int:
    return int(schedule_create_via_api(key, **body)["id"])


def _as_if_down_for_an_hour(tenant, schedule_id: int) -> timezone.datetime:
    """Back-date the schedule: its last occurrence handled an hour ago, its latest due 30 s ago
    (every 60 s from its anchor). Returns that latest due time."""
    now = timezone.now().replace(microsecond=0)
    anchor = now - timedelta(seconds=3630)
    with tenant:
        Schedule.objects.filter(pk=schedule_id).update(anchor=anchor, last_due_at=anchor)
    return anchor + timedelta(seconds=3600)


def _one_due_in_each_of_two(ent, slug: str):
    """The tenant of `ent` and a fresh one, `slug`, with one overdue schedule each, and a book
    holding both: (tenant, its schedule, other tenant, its schedule, book)."""
    tenant, key = ent
    other, other_key = fresh_tenant(slug)
    mine = _create(key, interval_seconds=60)
    theirs = _create(other_key, interval_seconds=60)
    _as_if_down_for_an_hour(tenant, mine)
    _as_if_down_for_an_hour(other, theirs)
    book = TenantBook()
    book.load_all()
    return tenant, mine, other, theirs, book


def _tick(book: TenantBook | None = None, ahead: float = 0.0) -> TenantBook:
    if book is None:
        book = TenantBook()
        book.load_all()
    book.run_due(time.time() + ahead)
    return book


def _runs(tenant, schedule_id: int) -> list[ScheduleRun]:
    with tenant:
        return list(ScheduleRun.objects.filter(schedule_id=schedule_id).order_by("due_at"))


def test_missed_runs_run_once_on_recovery_within_the_catch_up_window(ent):
    tenant, key = ent
    schedule_id = _create(key, interval_seconds=60)
    latest = _as_if_down_for_an_hour(tenant, schedule_id)
    book = _tick()
    runs = _runs(tenant, schedule_id)
    # Sixty occurrences passed; only the latest runs, once.
    assert [(run.due_at, run.outcome) for run in runs] == [(latest, ScheduleRunOutcome.SUBMITTED)]
    _tick(book)
    _tick()  # a restarted beat
    assert len(_runs(tenant, schedule_id)) == 1


def test_missed_runs_beyond_the_catch_up_window_or_with_skip_do_not_run(ent):
    tenant, key = ent
    windowed = _create(key, name="window", interval_seconds=60, catch_up_seconds=10)
    skipping = _create(key, name="skip", interval_seconds=60, missed_runs="skip")
    _as_if_down_for_an_hour(tenant, windowed)
    _as_if_down_for_an_hour(tenant, skipping)
    book = _tick()
    assert _runs(tenant, windowed) == []
    assert _runs(tenant, skipping) == []
    # They go on from the next occurrence.
    entries = book.entries[tenant.pk]
    assert entries[windowed].next_due > timezone.now()
    assert entries[skipping].next_due > timezone.now()


def test_overlap_skip_and_buffer_one_wait_for_the_previous_job(ent):
    tenant, key = ent
    skip = _create(key, name="skip", interval_seconds=60, overlap="skip")
    buffer = _create(key, name="buffer", interval_seconds=60, overlap="buffer_one")
    with tenant:
        previous = Job.objects.create(
            type="demo.add", args={"x": 1, "y": 2}, queue="default", submitted_by="test"
        )
        Schedule.objects.filter(pk__in=[skip, buffer]).update(last_job=previous)
    _as_if_down_for_an_hour(tenant, skip)
    _as_if_down_for_an_hour(tenant, buffer)
    book = _tick()
    assert [run.outcome for run in _runs(tenant, skip)] == [ScheduleRunOutcome.SKIPPED_OVERLAP]
    assert [run.outcome for run in _runs(tenant, buffer)] == [ScheduleRunOutcome.BUFFERED]
    with tenant:
        assert Job.objects.filter(schedule_id__in=[skip, buffer]).count() == 0
        Job.objects.filter(pk=previous.pk).update(status=JobStatus.SUCCEEDED)
    _tick(book, ahead=1.5)
    held = _runs(tenant, buffer)
    assert [run.outcome for run in held] == [ScheduleRunOutcome.SUBMITTED]
    with tenant:
        assert Job.objects.get(pk=held[0].job_id).submitted_by == f"schedule:{buffer}"
        assert Schedule.objects.get(pk=buffer).last_job_id == held[0].job_id
    assert [run.outcome for run in _runs(tenant, skip)] == [ScheduleRunOutcome.SKIPPED_OVERLAP]


def test_a_suspended_tenants_schedules_do_not_fire_until_it_is_resumed(ent):
    from tenants.models import Tenant

    tenant, key = ent
    schedule_id = _create(key, interval_seconds=60)
    latest = _as_if_down_for_an_hour(tenant, schedule_id)
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)
    try:
        book = _tick()
        assert tenant.pk not in book.entries
        assert _runs(tenant, schedule_id) == []
    finally:
        Tenant.objects.filter(pk=tenant.pk).update(is_active=True)
    book.tenants_read_at = 0.0  # the tenant table is read again on the next refresh
    book.refresh()
    _tick(book)
    # Its suspension was a miss: the latest occurrence runs once (run_once, within the window).
    assert [run.due_at for run in _runs(tenant, schedule_id)] == [latest]


def test_a_clocked_schedule_runs_once_and_is_then_disabled(ent):
    tenant, key = ent
    when = timezone.now() + timedelta(seconds=1)
    schedule_id = _create(key, run_at=when.isoformat())
    book = _tick()
    assert _runs(tenant, schedule_id) == []
    time.sleep(1.2)
    _tick(book)
    _tick(book, ahead=5)
    runs = _runs(tenant, schedule_id)
    assert [run.outcome for run in runs] == [ScheduleRunOutcome.SUBMITTED]
    with tenant:
        task = PeriodicTask.objects.get(job_schedule__id=schedule_id)
    assert (task.enabled, task.total_run_count) == (False, 1)
    assert call("GET", f"/schedules/{schedule_id}", key=key).body["next_runs"] == []


def test_changing_the_time_zone_restarts_the_schedule_from_now(ent):
    tenant, key = ent
    schedule_id = _create(key, cron="0 * * * *")
    _tick()
    with tenant:
        PeriodicTask.objects.filter(job_schedule__id=schedule_id).update(
            last_run_at=timezone.now() - timedelta(hours=5)
        )
    before = timezone.now()
    answer = call("PATCH", f"/schedules/{schedule_id}", key=key, body={"timezone": "Asia/Kolkata"})
    assert answer.status == 200
    with tenant:
        schedule = Schedule.objects.select_related("periodic_task").get(pk=schedule_id)
    # The seed's PeriodicTask.objects.update(last_run_at=None), done for the user; nothing
    # computed under the old zone is caught up.
    assert schedule.periodic_task.last_run_at is None
    assert schedule.last_due_at >= before


def test_a_tenant_whose_schema_vanishes_mid_tick_does_not_stop_the_others(ent, caplog):
    from django.db import connection

    tenant, mine, doomed, theirs, book = _one_due_in_each_of_two(ent, "scheddoomed")
    # Renamed away rather than dropped, and put back after: the tenant row stays, its schema
    # is gone for this tick (as when it is deleted while the beat holds its entries).
    with connection.cursor() as cursor:
        cursor.execute('ALTER SCHEMA "scheddoomed" RENAME TO "scheddoomed_gone"')
    try:
        _tick(book)
    finally:
        with connection.cursor() as cursor:
            cursor.execute('ALTER SCHEMA "scheddoomed_gone" RENAME TO "scheddoomed"')
    assert len(_runs(tenant, mine)) == 1
    assert _runs(doomed, theirs) == []
    assert "beat skips an occurrence of schedule" in caplog.text


def test_an_occurrence_is_recorded_once_whatever_the_beats_believe(ent):
    from jobs.schedules.occurrences import Result, occurrence_run

    tenant, key = ent
    schedule_id = _create(key, interval_seconds=60)
    due = _as_if_down_for_an_hour(tenant, schedule_id)
    with tenant:
        assert occurrence_run(schedule_id=schedule_id, due_at=due) == Result.SUBMITTED
        # A second beat at the lease's edge, with the same occurrence in its heap.
        assert occurrence_run(schedule_id=schedule_id, due_at=due) == Result.ALREADY_DONE
        # Even one whose view of the schedule is stale: the (schedule, due_at) key holds.
        Schedule.objects.filter(pk=schedule_id).update(last_due_at=due - timedelta(seconds=60))
        assert occurrence_run(schedule_id=schedule_id, due_at=due) == Result.ALREADY_DONE
        assert Job.objects.filter(schedule_id=schedule_id).count() == 1
        assert ScheduleRun.objects.filter(schedule_id=schedule_id).count() == 1


def test_each_occurrence_logs_a_line_naming_its_tenant_schedule_and_job(ent, caplog):
    import logging

    import sentry_sdk
    import structlog

    tenant, key = ent
    schedule_id = _create(key, interval_seconds=60)
    latest = _as_if_down_for_an_hour(tenant, schedule_id)
    bound: list[dict] = []

    tagged: list[dict] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # Only this tenant's lines: the book holds every tenant's entries (other tests').
            if f"of tenant {tenant.schema_name}:" in record.getMessage():
                bound.append(dict(structlog.contextvars.get_contextvars()))
                tagged.append(dict(sentry_sdk.get_isolation_scope()._tags))

    seen = Seen()
    logging.getLogger("jobs.schedules").addHandler(seen)
    try:
        with caplog.at_level("INFO", logger="jobs.schedules"):
            _tick()
    finally:
        logging.getLogger("jobs.schedules").removeHandler(seen)
    (run,) = _runs(tenant, schedule_id)
    line = (
        f"schedule {schedule_id} of tenant {tenant.schema_name}: occurrence "
        f"{latest.isoformat()} submitted as job {run.job_id}"
    )
    assert line in caplog.messages, caplog.messages
    # Bound while the entry ran (JSON log lines and Sentry events carry them), cleared after.
    assert {"tenant": tenant.schema_name, "schedule": schedule_id}.items() <= bound[-1].items()
    assert "schedule" not in structlog.contextvars.get_contextvars()
    # Sentry's tags likewise: set in a scope of the entry's, gone from the beat's after it.
    assert {"tenant": tenant.schema_name, "schedule": str(schedule_id)}.items() <= tagged[
        -1
    ].items()
    assert "schedule" not in sentry_sdk.get_isolation_scope()._tags


def test_a_tenants_due_occurrences_run_together_and_a_refused_one_stops_none(ent):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    tenant, key = ent
    ids = [_create(key, interval_seconds=60, name=f"s{n}") for n in range(3)]
    latest = [_as_if_down_for_an_hour(tenant, schedule_id) for schedule_id in ids]
    with tenant:  # its job type since removed from the catalogue
        Schedule.objects.filter(pk=ids[1]).update(type="demo.removed")
    book = TenantBook()
    book.load_all()
    with CaptureQueriesContext(connection) as seen:
        _tick(book)
    locks = [q["sql"] for q in seen.captured_queries if "FOR UPDATE" in q["sql"]]
    assert len(locks) == 1, locks  # the three schedules locked, decided and written together
    outcomes = {i: [(r.due_at, r.outcome) for r in _runs(tenant, i)] for i in ids}
    assert outcomes == {
        ids[0]: [(latest[0], ScheduleRunOutcome.SUBMITTED)],
        ids[1]: [(latest[1], ScheduleRunOutcome.FAILED)],
        ids[2]: [(latest[2], ScheduleRunOutcome.SUBMITTED)],
    }
    with tenant:
        assert "UnknownJobType" in ScheduleRun.objects.get(schedule_id=ids[1]).error
        assert Job.objects.filter(schedule_id__in=ids).count() == 2


def test_one_occurrence_another_beat_recorded_first_leaves_the_others_to_run(ent):
    from jobs.schedules.occurrences import Due, Result, occurrence_run, occurrences_run

    tenant, key = ent
    ids = [_create(key, interval_seconds=60, name=f"s{n}") for n in range(3)]
    dues = [Due(schedule_id, _as_if_down_for_an_hour(tenant, schedule_id)) for schedule_id in ids]
    with tenant:
        assert occurrence_run(schedule_id=ids[0], due_at=dues[0].due_at) == Result.SUBMITTED
        # This beat's view is stale: the unique (schedule, due_at) key is what stops it.
        Schedule.objects.filter(pk=ids[0]).update(last_due_at=dues[0].due_at - timedelta(60))
        assert occurrences_run(dues) == {
            ids[0]: Result.ALREADY_DONE,
            ids[1]: Result.SUBMITTED,
            ids[2]: Result.SUBMITTED,
        }
        assert occurrences_run(dues) == dict.fromkeys(ids, Result.ALREADY_DONE)
        assert Job.objects.filter(schedule_id__in=ids).count() == 3
        assert ScheduleRun.objects.filter(schedule_id__in=ids).count() == 3


def test_a_tick_past_its_budget_leaves_the_other_tenants_due_entries_for_the_next(ent, monkeypatch):
    from jobs.schedules import beat

    tenant, mine, other, theirs, book = _one_due_in_each_of_two(ent, "schedbudget")
    monkeypatch.setattr(beat, "FIRE_BUDGET_SECONDS", 0.0)  # one transaction's entries a tick
    monkeypatch.setattr(beat, "TENANTS_PER_TRANSACTION", 1)
    assert book.run_due(time.time()) == 0.0  # more is due: come back at once
    first = (len(_runs(tenant, mine)), len(_runs(other, theirs)))
    assert sorted(first) == [0, 1]
    book.run_due(time.time())
    # Nothing was lost on the way back to the heap: the other tenant's occurrence ran.
    assert (len(_runs(tenant, mine)), len(_runs(other, theirs))) == (1, 1)


def _across(*tenants_dues):
    from jobs.schedules.occurrences import Due, TenantDues

    return [
        TenantDues(
            tenant.pk, tenant.schema_name, [Due(schedule_id, due) for schedule_id, due in dues]
        )
        for tenant, dues in tenants_dues
    ]


def test_several_tenants_occurrences_run_in_one_transaction_each_in_its_own_schema(ent):
    from django.db import connection, transaction
    from saas_platform.lib.tenant_context import tenant_enter

    from jobs.schedules.occurrences import Result, occurrences_run_across
    from tests.schemas import schemas_holding

    tenant, key = ent
    other, other_key = fresh_tenant("schedacross")
    mine = [_create(key, interval_seconds=60, name=f"s{n}") for n in range(2)]
    theirs = _create(other_key, interval_seconds=60)
    batch = _across(
        (
            tenant,
            [(schedule_id, _as_if_down_for_an_hour(tenant, schedule_id)) for schedule_id in mine],
        ),
        (other, [(theirs, _as_if_down_for_an_hour(other, theirs))]),
    )
    statements: list[str] = []

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append(sql)
        return execute(sql, params, many, context)

    tenant_enter(None)  # as in the beat
    with transaction.atomic():  # a caller's: what the call leaves set shows in it
        with connection.execute_wrapper(count):
            results = occurrences_run_across(batch)
        # The locks of both tenants in one query string, their jobs and records in another
        # (apart from the savepoint of the caller's transaction and django-tenants' own SET).
        ours = [sql for sql in statements if "SAVEPOINT" not in sql and "SET search" not in sql]
        assert len(ours) == 2
        assert all(sql.startswith("SET LOCAL search_path") for sql in ours)
        # The search_path is the active schema's again, as django-tenants believes.
        with connection.cursor() as cursor:
            cursor.execute("SHOW search_path")
            assert cursor.fetchone()[0].split(",")[0] == connection.schema_name
    assert results == {
        tenant.pk: dict.fromkeys(mine, Result.SUBMITTED),
        other.pk: {theirs: Result.SUBMITTED},
    }
    with tenant:
        made = list(Job.objects.filter(schedule_id__in=mine).values_list("id", "submitted_by"))
        assert sorted(by for _, by in made) == sorted(f"schedule:{n}" for n in mine)
        assert ScheduleRun.objects.filter(schedule_id__in=mine).count() == 2
    with other:
        [(their_job,)] = Job.objects.filter(schedule_id=theirs).values_list("id")
        assert Schedule.objects.get(pk=theirs).last_job_id == their_job
    holding = schemas_holding("jobs_job", "id", [job for job, _ in made] + [their_job])
    assert holding == {
        **{str(job): {tenant.schema_name} for job, _ in made},
        str(their_job): {other.schema_name},
    }
    # Run again: each is done, in either tenant.
    assert occurrences_run_across(batch) == {
        tenant.pk: dict.fromkeys(mine, Result.ALREADY_DONE),
        other.pk: {theirs: Result.ALREADY_DONE},
    }


def test_one_tenants_occurrence_recorded_first_records_none_and_the_beat_runs_the_rest(ent):
    from django.db import IntegrityError

    from jobs.schedules.occurrences import Result, occurrence_run, occurrences_run_across

    tenant, key = ent
    other, other_key = fresh_tenant("schedacross")
    mine = _create(key, interval_seconds=60)
    theirs = _create(other_key, interval_seconds=60)
    due = _as_if_down_for_an_hour(tenant, mine)
    their_due = _as_if_down_for_an_hour(other, theirs)
    with tenant:
        assert occurrence_run(schedule_id=mine, due_at=due) == Result.SUBMITTED
        # This beat's view is stale: the unique (schedule, due_at) key is what stops it.
        Schedule.objects.filter(pk=mine).update(last_due_at=due - timedelta(60))
    with pytest.raises(IntegrityError):
        occurrences_run_across(_across((tenant, [(mine, due)]), (other, [(theirs, their_due)])))
    assert _runs(other, theirs) == []  # rolled back with the rest
    # The beat then goes tenant by tenant: the other tenant's occurrence runs, mine once only.
    book = TenantBook()
    book.load_all()
    book.run_due(time.time())
    assert [run.due_at for run in _runs(other, theirs)] == [their_due]
    assert [run.due_at for run in _runs(tenant, mine)] == [due]


def test_a_tenant_whose_schema_is_gone_mid_tick_stops_no_other_tenant_of_its_transaction(
    ent, caplog
):
    from django.db import connection

    tenant, key = ent
    doomed, doomed_key = fresh_tenant("schedgone")
    mine = _create(key, interval_seconds=60)
    theirs = _create(doomed_key, interval_seconds=60)
    due = _as_if_down_for_an_hour(tenant, mine)
    _as_if_down_for_an_hour(doomed, theirs)
    book = TenantBook()
    book.load_all()
    # Its schedules' table goes while the beat holds its entries (the schema is put back after).
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{doomed.schema_name}".jobs_schedule RENAME TO gone')
    try:
        book.run_due(time.time())
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER TABLE "{doomed.schema_name}".gone RENAME TO jobs_schedule')
    assert [run.due_at for run in _runs(tenant, mine)] == [due]
    assert _runs(doomed, theirs) == []
    assert f"beat skips an occurrence of schedule {theirs} of tenant {doomed.pk}" in caplog.text


def test_a_book_outside_the_beat_leaves_no_connection_open_in_its_firing_threads(ent):
    import threading

    from django.db import connection

    from jobs.schedules import beat

    tenant, mine, other, theirs, book = _one_due_in_each_of_two(ent, "schedthreads")
    book.run_due(time.time())
    assert (len(_runs(tenant, mine)), len(_runs(other, theirs))) == (1, 1)  # in the threads
    # Ask each thread (one task each: they wait for one another) whether it holds one.
    barrier = threading.Barrier(beat.FIRING_THREADS)

    def holds_one() -> bool:
        held = connection.connection is not None
        barrier.wait(timeout=30)
        return held

    pool = book._pool()
    futures = [pool.submit(holds_one) for _ in range(beat.FIRING_THREADS)]
    assert [future.result() for future in futures] == [False] * beat.FIRING_THREADS
    book.close()


def test_a_tenant_whose_schedules_changed_goes_first_in_a_tick_behind_its_occurrences(
    ent, monkeypatch
):
    from jobs.schedules import beat

    tenant, mine, other, theirs, book = _one_due_in_each_of_two(ent, "schedchanged")
    assert tenant.pk < other.pk  # without the change, mine would go first (same due time)
    monkeypatch.setattr(beat, "FIRE_BUDGET_SECONDS", 0.0)  # one transaction's entries a tick
    monkeypatch.setattr(beat, "TENANTS_PER_TRANSACTION", 1)
    book.refresh()  # what the setup announced
    book.changed.clear()
    # A change through the API: a one-off due now for the other tenant, announced to the beat.
    _, other_key = tenant_on_plan(other.schema_name)
    _create(other_key, run_at=timezone.now().isoformat(), name="now")
    book.refresh()
    assert book.changed == {other.pk}
    book.run_due(time.time())
    assert (len(_runs(tenant, mine)), len(_runs(other, theirs))) == (0, 1)
    book.run_due(time.time())
    assert (len(_runs(tenant, mine)), len(_runs(other, theirs))) == (1, 1)


def test_an_entry_that_cannot_be_planned_is_skipped_and_the_rest_of_its_transaction_runs(
    ent, monkeypatch, caplog
):
    tenant, mine, other, theirs, book = _one_due_in_each_of_two(ent, "schedunplanned")
    planned = book._plan

    def plan(entry, now):  # type: ignore[no-untyped-def]
        if entry.schedule_id == theirs and entry.tenant_id == other.pk:
            raise ValueError("an unreadable timing")
        return planned(entry, now)

    monkeypatch.setattr(book, "_plan", plan)
    book.run_due(time.time())  # raises nothing
    assert len(_runs(tenant, mine)) == 1
    assert _runs(other, theirs) == []
    assert f"beat skips an occurrence of schedule {theirs} of tenant {other.pk}" in caplog.text
