"""Prototypes, for measurement only: fewer statements to record a job's success.

The product records a successful job with a Job UPDATE (in the task), then django-celery-results
stores the result with a SELECT and an INSERT in a transaction of its own: five round trips and
two commits (two WAL flushes). This backend does both writes in one statement, one commit:

    WITH done AS (UPDATE jobs_job ... WHERE id = %s AND task_id = %s AND status = 'running')
    INSERT INTO django_celery_results_taskresult (...) VALUES (...)
    ON CONFLICT (task_id) DO UPDATE SET ...

with the same column values django-celery-results would write. The task's own job_succeed is
turned into a no-op (bench.variant_settings patches jobs.runner in each pool child). Anything
that is not a job's success goes through the product's backend unchanged.

UpsertResultBackend is the smaller half of that: the Job UPDATE stays in the task, and only the
result row is written with the single INSERT ... ON CONFLICT instead of django-celery-results'
get_or_create (SELECT, then BEGIN / INSERT / COMMIT).

Not drop-ins for the product: they write django-celery-results' table with raw SQL (coupled to
that package's schema), and the merged one leaves the Job row `running` until the result is
stored; they exist to measure what the saving is worth.
"""

from __future__ import annotations

import json
from typing import Any

from celery import states
from django.db import connection
from saas_platform.results_backend import TenantDatabaseBackend
from saas_platform.tenant_context import headers_tenant_id, tenant_activated

_JOB_DONE_SQL = """
WITH done AS (
    UPDATE jobs_job
       SET status = 'succeeded', result = %s::jsonb, error = '', finished_at = now()
     WHERE id = %s AND task_id = %s AND status = 'running'
)
"""
_UPSERT_SQL = """
INSERT INTO django_celery_results_taskresult
    (task_id, periodic_task_name, task_name, task_args, task_kwargs, status, worker,
     content_type, content_encoding, result, date_created, date_started, date_done,
     traceback, meta)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), NULL, now(), %s, %s)
ON CONFLICT (task_id) DO UPDATE SET
    periodic_task_name = EXCLUDED.periodic_task_name, task_name = EXCLUDED.task_name,
    task_args = EXCLUDED.task_args, task_kwargs = EXCLUDED.task_kwargs,
    status = EXCLUDED.status, worker = EXCLUDED.worker, content_type = EXCLUDED.content_type,
    content_encoding = EXCLUDED.content_encoding, result = EXCLUDED.result,
    date_done = EXCLUDED.date_done, traceback = EXCLUDED.traceback, meta = EXCLUDED.meta
"""


class UpsertResultBackend(TenantDatabaseBackend):
    merge_job_update = False

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        from jobs.catalogue import catalogue

        tenant_id = headers_tenant_id(request) if request is not None else None
        task_name = getattr(request, "task", None)
        args = getattr(request, "args", None) or []
        if status != states.SUCCESS or tenant_id is None or task_name not in catalogue():
            return super()._store_result(task_id, result, status, traceback, request, using)
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        extended = self._get_extended_properties(request, traceback)
        job_params = [json.dumps(result), str(args[0]), task_id]
        params = [
            task_id,
            extended["periodic_task_name"],
            extended["task_name"],
            extended["task_args"],
            extended["task_kwargs"],
            status,
            extended["worker"],
            content_type,
            content_encoding,
            encoded,
            traceback,
            encoded_meta,
        ]
        with tenant_activated(tenant_id), connection.cursor() as cursor:
            if self.merge_job_update:
                cursor.execute(_JOB_DONE_SQL + _UPSERT_SQL, job_params + params)
            else:
                cursor.execute(_UPSERT_SQL, params)
        return result


class MergedSuccessBackend(UpsertResultBackend):
    merge_job_update = True
