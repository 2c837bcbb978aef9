"""Result expiry (jobs.services.results_expiry): a job type's result_expires_seconds, capped by
the tenant plan's retention, in the tenant's own schema only."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

from django.utils import timezone
from django_celery_results.models import TaskResult

from billing.selectors import tenant_plan
from jobs.catalogue import catalogue
from jobs.services import results_expiry
from jobs.services.results_expiry import result_lifetimes, results_expire


def _row(task_name: str | None, age: timedelta) -> str:
    task_id = str(uuid.uuid4())
    TaskResult.objects.create(
        task_id=task_id, task_name=task_name, status="SUCCESS", date_done=timezone.now() - age
    )
    # date_done is auto_now: set the age after the insert.
    TaskResult.objects.filter(task_id=task_id).update(date_done=timezone.now() - age)
    return task_id


def test_lifetimes_are_the_types_own_capped_by_the_retention(monkeypatch):
    add = catalogue()["demo.add"]
    monkeypatch.setitem(catalogue(), "demo.add", replace(add, result_expires_seconds=3600))
    lifetimes = result_lifetimes(retention_days=7)
    assert lifetimes["demo.add"] == timedelta(hours=1)
    assert lifetimes["demo.sleep"] == timedelta(days=7)
    assert result_lifetimes(retention_days=0)["demo.add"] == timedelta(0)


def test_it_deletes_expired_rows_of_the_active_tenant_only(tenant_db, monkeypatch):
    with tenant_db.acme:
        retention = timedelta(days=tenant_plan(tenant_id=tenant_db.acme.pk).retention_days)
    monkeypatch.setattr(
        results_expiry,
        "result_lifetimes",
        lambda days: {**result_lifetimes(days), "demo.add": timedelta(hours=1)},
    )
    with tenant_db.acme:
        fresh_add = _row("demo.add", timedelta(minutes=30))
        old_add = _row("demo.add", timedelta(hours=2))
        kept_sleep = _row("demo.sleep", timedelta(hours=2))
        old_sleep = _row("demo.sleep", retention + timedelta(hours=1))
        old_unknown = _row("gone.type", retention + timedelta(hours=1))
    with tenant_db.globex:
        globex_old = _row("demo.add", timedelta(hours=2))

    with tenant_db.acme:
        assert results_expire() == 3
        left = set(
            TaskResult.objects.filter(
                task_id__in=[fresh_add, old_add, kept_sleep, old_sleep, old_unknown]
            ).values_list("task_id", flat=True)
        )
    assert left == {fresh_add, kept_sleep}
    with tenant_db.globex:
        assert TaskResult.objects.filter(task_id=globex_old).exists()
