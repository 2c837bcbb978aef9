"""The results backend (saas_platform.lib.results_backend, jobs.results_backend): a result goes to
its task's tenant, and a result with no tenant at all is refused, never written anywhere."""

from __future__ import annotations

import pytest
from celery import states
from celery.app.task import Context
from saas_platform.celery_app import app
from saas_platform.lib.db import connection
from saas_platform.lib.results_backend import ResultWithoutTenant

from jobs.models import Job
from tests.schemas import schemas_holding

RESULTS = {
    states.SUCCESS: 3,
    states.FAILURE: RuntimeError("boom"),
    states.REVOKED: None,
}


@pytest.mark.parametrize("state", sorted(RESULTS))
def test_a_result_without_a_tenant_raises_and_writes_nothing_anywhere(tenant_db, state):
    # A queued job in acme whose task's request lost the tenant header on the way: the write
    # comes from public, as in Celery's main process after it lost a pool child.
    with tenant_db.acme:
        job = Job(type="demo.add", args={"x": 1, "y": 2}, queue="default", submitted_by="test")
        job.task_id = job.id
        job.save(force_insert=True)
    task_id = str(job.task_id)
    request = Context(
        id=task_id, task="demo.add", args=[str(job.id)], kwargs={}, headers={}, delivery_info={}
    )
    assert connection.schema_name == "public"

    with pytest.raises(ResultWithoutTenant, match=task_id):
        app.backend.store_result(task_id, RESULTS[state], state, request=request)

    # No result row in any schema (public has no results table at all), and the Job row, which
    # the jobs backend moves along with a result, is untouched.
    assert schemas_holding("django_celery_results_taskresult", "task_id", [task_id]) == {
        task_id: set()
    }
    with tenant_db.acme:
        unchanged = Job.objects.get(id=job.id)
    assert (unchanged.status, unchanged.result, unchanged.error) == ("queued", None, "")
