"""django-celery-results, writing into the schema of the task's tenant.

Inside a task the tenant is already active (task_prerun). But Celery's main process also writes
results: when a pool child is lost, when a hard time limit kills it, when a task is revoked before
it runs. Those writes carry the request, and its headers carry the tenant; this backend activates
that tenant around the write. django_celery_results has no table in public, so a write with no
tenant fails loudly instead of landing in the wrong place.

The same main-process writes are the only record that a job ended that way, so the Job row is
brought to its final state here too (a conditional UPDATE: a no-op when the task did it already).
A job's success is recorded here as well, Job row and result row in one statement
(jobs.success).
"""

from __future__ import annotations

from typing import Any

from celery import states
from django_celery_results.backends.database import DatabaseBackend
from django_tenants.utils import get_public_schema_name
from saas_platform.db import connection
from saas_platform.tenant_context import headers_tenant_id, tenant_activated


def _is_job(task_name: str | None) -> bool:
    from jobs.catalogue import catalogue

    return task_name is not None and task_name in catalogue()


class TenantDatabaseBackend(DatabaseBackend):  # type: ignore[misc]  # untyped base class
    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        tenant_id = headers_tenant_id(request) if request is not None else None
        if tenant_id is None:
            # No tenant: platform tasks keep no results (django_celery_results is tenant-only).
            if connection.schema_name == get_public_schema_name():
                return result
            return super()._store_result(task_id, result, status, traceback, request, using)
        task_name = getattr(request, "task", None)
        with tenant_activated(tenant_id):
            if status == states.SUCCESS and _is_job(task_name) and getattr(request, "args", None):
                return self._store_job_success(task_id, result, request)
            stored = super()._store_result(task_id, result, status, traceback, request, using)
            if status in (states.FAILURE, states.REVOKED):
                from jobs.outcomes import job_record_ended_outside_task

                job_record_ended_outside_task(
                    task_id=task_id,
                    status=status,
                    error=traceback or repr(result),
                    task_name=task_name,
                )
            return stored

    def _store_job_success(self, task_id: str, result: Any, request: Any) -> Any:
        from jobs.success import job_succeed_with_result

        # The same encodings django-celery-results' own _store_result computes.
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        job_succeed_with_result(
            job_id=str(request.args[0]),
            task_id=task_id,
            encoded_result=encoded,
            content_type=content_type,
            content_encoding=content_encoding,
            encoded_meta=encoded_meta,
            extended=self._get_extended_properties(request, None),
        )
        return encoded

    def _get_task_meta_for(self, task_id: str) -> Any:
        # Reading a result needs the tenant's schema. Without one there is nothing to read (and
        # querying public would fail): the main process asks this after losing a pool child.
        if connection.schema_name == get_public_schema_name():
            return {"status": states.PENDING, "result": None}
        return super()._get_task_meta_for(task_id)
