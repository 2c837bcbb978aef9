"""django-celery-results, writing into the schema of the task's tenant.

Inside a task the tenant is already active (task_prerun). But Celery's main process also writes
results: when a pool child is lost, when a hard time limit kills it, when a task is revoked before
it runs. Those writes carry the request, and its headers carry the tenant; this backend activates
that tenant around the write. django_celery_results has no table in public, and a result with no
tenant at all is refused with an exception, so it can never land in the wrong place.

Apps refine what a write does inside the tenant by overriding `_store_in_tenant`
(jobs.results_backend brings the Job row along).
"""

from __future__ import annotations

from typing import Any

from celery import states
from django.db import InterfaceError, OperationalError
from django_celery_results.backends.database import DatabaseBackend
from django_tenants.utils import get_public_schema_name
from saas_platform.lib.db import connection
from saas_platform.lib.tenant_context import active_tenant, headers_tenant_id, tenant_activated


class ResultWithoutTenant(RuntimeError):
    """A task result with no tenant in its request and none active: there is nowhere to put it."""


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
            if active_tenant() is None:
                # Platform tasks keep no results (ignore_result); anything else reaching this
                # point lost its tenant on the way, which must be loud, never a silent drop.
                raise ResultWithoutTenant(
                    f"the result of task {task_id} ({getattr(request, 'task', '?')}) "
                    "carries no tenant"
                )
            return self._store_in_tenant(task_id, result, status, traceback, request, using)
        with tenant_activated(tenant_id):
            return self._store_in_tenant(task_id, result, status, traceback, request, using)

    def _store_in_tenant(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None,
        request: Any,
        using: str | None,
    ) -> Any:
        """The write itself, with the tenant's schema active."""
        return super()._store_result(task_id, result, status, traceback, request, using)

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """With CELERY_RESULT_BACKEND_ALWAYS_RETRY, Celery retries a write that failed this way.

        django-celery-results retries only InterfaceError ("connection already closed"); an
        unreachable server (OperationalError) is as recoverable: drop the broken connection and
        write again, with the tenant activated anew (a new connection has no search_path).
        """
        if isinstance(exc, InterfaceError | OperationalError):
            connection.close()
            return True
        return bool(super().exception_safe_to_retry(exc))

    def _get_task_meta_for(self, task_id: str) -> Any:
        # Reading a result needs the tenant's schema. Without one there is nothing to read (and
        # querying public would fail): the main process asks this after losing a pool child.
        if connection.schema_name == get_public_schema_name():
            return {"status": states.PENDING, "result": None}
        return super()._get_task_meta_for(task_id)
