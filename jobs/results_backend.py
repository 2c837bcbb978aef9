"""The results backend for jobs: a job's result row and its Job row move together.

saas_platform.lib.results_backend puts each result in its tenant's schema. For the tasks of
catalogue job types this subclass also brings the Job row to its final state:
- success: the Job row and the result row in one statement (jobs.services.transitions);
- failure or revocation written by Celery's main process (hard time limit, lost worker, revoked
  before running): the only record that the job ended that way, so the Job row follows (a
  conditional UPDATE: a no-op when the task already recorded its end).
"""

from __future__ import annotations

from typing import Any

from celery import states
from saas_platform.lib.results_backend import TenantDatabaseBackend

from jobs.catalogue import catalogue
from jobs.services.transitions import job_record_ended_outside_task, job_succeed_with_result


def _is_job(task_name: str | None) -> bool:
    return task_name is not None and task_name in catalogue()


class JobResultsBackend(TenantDatabaseBackend):
    def _store_in_tenant(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None,
        request: Any,
        using: str | None,
    ) -> Any:
        task_name = getattr(request, "task", None)
        if not _is_job(task_name):
            return super()._store_in_tenant(task_id, result, status, traceback, request, using)
        if status == states.SUCCESS and getattr(request, "args", None):
            return self._store_job_success(task_id, result, request)
        stored = super()._store_in_tenant(task_id, result, status, traceback, request, using)
        if status in (states.FAILURE, states.REVOKED):
            job_record_ended_outside_task(
                task_id=task_id, status=status, error=traceback or repr(result)
            )
        return stored

    def _store_job_success(self, task_id: str, result: Any, request: Any) -> Any:
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
