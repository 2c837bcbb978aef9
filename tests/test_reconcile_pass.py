"""One reconciler pass (jobs.maintenance): which tenants it visits, that passes never overlap,
and that a pass that did not happen is visible."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest
from django.conf import settings
from saas_platform.lib.db import connection
from saas_platform.lib.service_urls import database_url_with_name
from saas_platform.lib.state_redis import state_key, state_redis

import jobs.maintenance as maintenance
from jobs.models import FINAL_STATUSES, Job, JobStatus
from jobs.services import activity
from tests.jobs_helpers import submit


def _active() -> set[int]:
    return {int(m) for m in state_redis().smembers(state_key("active-tenants"))}


@pytest.fixture
def visited(monkeypatch) -> list[str]:
    """The schemas the pass visits, in order (the per-tenant work itself still runs)."""
    seen: list[str] = []
    real = maintenance.tenant_reconcile

    def spy(view):
        seen.append(connection.schema_name)
        return real(view)

    monkeypatch.setattr(maintenance, "tenant_reconcile", spy)
    return seen


def _finish_everything(tenant) -> None:
    with tenant:
        Job.objects.exclude(status__in=FINAL_STATUSES).update(status=JobStatus.CANCELLED)


def test_submitting_marks_the_tenant_active(tenant_db):
    state_redis().srem(state_key("active-tenants"), tenant_db.globex.pk)
    submit(tenant_db.globex, "demo.add", {"x": 1, "y": 1}, delay_seconds=600)
    assert tenant_db.globex.pk in _active()


def test_a_pass_visits_only_the_tenants_with_unfinished_work(tenant_db, visited):
    activity.full_sweep_done()  # a fresh set: no full sweep due
    for tenant in (tenant_db.acme, tenant_db.globex, tenant_db.initech):
        _finish_everything(tenant)
    state_redis().delete(state_key("active-tenants"))
    submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, delay_seconds=600)
    report = maintenance.reconcile_pass()
    assert report is not None
    assert not report.full_sweep
    assert visited == ["initech"]


def test_a_tenant_found_with_nothing_unfinished_leaves_the_set(tenant_db, visited):
    activity.full_sweep_done()
    _finish_everything(tenant_db.globex)
    activity.tenant_mark_active(tenant_db.globex.pk)
    maintenance.reconcile_pass()
    assert "globex" in visited
    assert tenant_db.globex.pk not in _active()
    visited.clear()
    maintenance.reconcile_pass()
    assert "globex" not in visited


def test_a_lost_set_makes_the_next_pass_visit_every_tenant_and_rebuild_it(tenant_db, visited):
    # As after a FLUSHDB or a failover: the set and its sentinel are gone together.
    _finish_everything(tenant_db.acme)
    submit(tenant_db.globex, "demo.add", {"x": 1, "y": 1}, delay_seconds=600)
    state_redis().delete(state_key("active-tenants"), state_key("active-tenants", "swept-at"))
    report = maintenance.reconcile_pass()
    assert report is not None
    assert report.full_sweep
    assert {"acme", "globex", "initech"} <= set(visited)
    assert tenant_db.globex.pk in _active()
    assert tenant_db.acme.pk not in _active()
    visited.clear()
    assert not maintenance.reconcile_pass().full_sweep  # the sentinel is back


def test_passes_never_overlap(tenant_db, visited):
    # Another worker's pass holds the lock: this one skips its turn, touching nothing.
    url = database_url_with_name(settings.DATABASE_URL, settings.DATABASES["default"]["NAME"])
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [maintenance._PASS_LOCK])
        assert maintenance.reconcile_pass() is None
        other.execute("SELECT pg_advisory_unlock(%s)", [maintenance._PASS_LOCK])
    assert visited == []
    assert maintenance.reconcile_pass() is not None


def test_a_pass_overdue_for_three_intervals_is_logged(tenant_db, caplog):
    key = state_key("reconcile", "last-pass")
    interval = settings.JOBS_RECONCILE_SECONDS
    state_redis().set(key, str(time.time() - 2 * interval))
    assert maintenance.reconcile_overdue_check() is None
    state_redis().set(key, str(time.time() - 10 * interval))
    with caplog.at_level(logging.WARNING, logger="jobs.maintenance"):
        late = maintenance.reconcile_overdue_check()
    assert late is not None
    assert late >= 10 * interval
    assert "no reconcile pass has completed" in caplog.text


def test_a_completed_pass_is_recorded(tenant_db):
    before = time.time()
    assert maintenance.reconcile_pass() is not None
    assert float(state_redis().get(state_key("reconcile", "last-pass"))) >= before
