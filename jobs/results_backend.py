"""The results backend for jobs: a job's result row and its Job row move together.

saas_platform.lib.results_backend puts each result in its tenant's schema. For the tasks of
catalogue job types this subclass also brings the Job row to its final state:
- success: the Job row and the result row in one statement (jobs.services.transitions), and for
  a workflow's step the next step's job in the same transaction (jobs.services.workflows);
- failure or revocation written by Celery's main process (hard time limit, lost worker, revoked
  before running): the only record that the job ended that way, so the Job row follows (a
  conditional UPDATE: a no-op when the task already recorded its end).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import states
from saas_platform.lib.db import connection
from saas_platform.lib.results_backend import TenantDatabaseBackend
from saas_platform.lib.state_redis import state_redis

from jobs.catalogue import catalogue
from jobs.models import AttemptOutcome
from jobs.observed import job_checkin_ended_outside_task
from jobs.services.dispatch import inflight_key
from jobs.services.transitions import JobSuccess, job_record_ended_outside_task, job_succeed
from jobs.services.workflows import WORKFLOW_STEP_ATTRIBUTE, workflow_step_succeed


def _is_job(task_name: str | None) -> bool:
    return task_name is not None and task_name in catalogue()


def _exception_type(result: Any) -> str | None:
    # Celery hands the backend an exception already encoded for the result serializer:
    # {"exc_type": "TimeLimitExceeded", "exc_message": [...], "exc_module": ...} with JSON.
    if isinstance(result, dict):
        exc_type = result.get("exc_type")
        return exc_type if isinstance(exc_type, str) else None
    if isinstance(result, BaseException):
        return type(result).__name__
    return None


def _attempt_outcome(status: str, result: Any) -> AttemptOutcome:
    """How the attempt ended, for a FAILURE or REVOKED this task did not record itself."""
    if status == states.REVOKED:
        return AttemptOutcome.CANCELLED
    exc_type = _exception_type(result)
    if exc_type == "TimeLimitExceeded":  # the main process killed the child at the hard limit
        return AttemptOutcome.TIMED_OUT
    if exc_type == "WorkerLostError":  # the child died and the message was not requeued
        return AttemptOutcome.LOST
    return AttemptOutcome.FAILED


def _error_text(result: Any) -> str:
    """The exception's type and message: "TimeLimitExceeded: 1.0"."""
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(str(part) for part in message)
        return (
            f"{result['exc_type']}: {message}" if message not in (None, "") else result["exc_type"]
        )
    return repr(result)


logger = logging.getLogger(__name__)

# The result row's columns that django-celery-results takes from the request (its
# _get_extended_properties), besides the encodings and meta computed here.
_RESULT_ROW_EXTENDED = ("periodic_task_name", "task_name", "task_args", "task_kwargs", "worker")


def _free_slot(task_id: str) -> None:
    try:
        state_redis().srem(inflight_key(connection.tenant.pk), task_id)
    except redis.RedisError as exc:
        logger.warning("slot of %s not freed (the reconciler will): %s", task_id, exc)


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
            outcome = _attempt_outcome(status, result)
            ended = job_record_ended_outside_task(
                task_id=task_id,
                status=status,
                outcome=outcome,
                error=_error_text(result),
                traceback=traceback or "",
            )
            if ended:
                job_checkin_ended_outside_task(task_id=task_id, outcome=outcome)
            # A child killed by its time limit never reached the runner's own release.
            _free_slot(task_id)
        return stored

    def _store_job_success(self, task_id: str, result: Any, request: Any) -> Any:
        # The same encodings django-celery-results' own _store_result computes.
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)

        extended = self._get_extended_properties(request, None)
        success = JobSuccess(
            job_id=str(request.args[0]),
            task_id=task_id,
            encoded_result=encoded,
            result_row={
                "content_type": content_type,
                "content_encoding": content_encoding,
                "meta": encoded_meta,
                **{name: extended[name] for name in _RESULT_ROW_EXTENDED},
            },
        )
        step = getattr(request, WORKFLOW_STEP_ATTRIBUTE, None)
        if step is None:
            job_succeed(success)
        else:
            # A workflow's step: its success and the next step's job in one statement.
            workflow_step_succeed(step=step, success=success, result=result)
        return encoded
