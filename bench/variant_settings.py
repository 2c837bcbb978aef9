"""The product's settings with the changes named in BENCH_VARIANT (comma-separated), for workers.

Used by bench.variants to measure suggested changes without editing the product:
- `limit-set`: TENANT_LIMIT_SET_CALLS, so django-tenants sends `SET search_path` only after the
  tenant changed, not before every query.
- `no-health-check`: CONN_HEALTH_CHECKS off: the tenant signals call close_old_connections()
  around every task, which with health checks on costs a `SELECT 1` per task.
- `async-commit`: the worker's sessions commit with synchronous_commit=off: its status updates
  and result rows stop waiting for the WAL flush (submission keeps waiting for it).
- `merged-success`: a job's success (Job UPDATE) and its result row written in one statement,
  one commit (the prototype in bench.variant_backend).
- `upsert-result`: only the result row in one INSERT ... ON CONFLICT (bench.variant_backend);
  the Job UPDATE stays in the task.
- `raw-succeed`: the task's Job UPDATE as one raw SQL statement instead of a QuerySet.update.
"""

from __future__ import annotations

import os

from saas_platform.settings import *  # noqa: F403
from saas_platform.settings import DATABASES

VARIANT = {name.strip() for name in os.environ.get("BENCH_VARIANT", "").split(",") if name.strip()}
_KNOWN = {
    "limit-set",
    "no-health-check",
    "async-commit",
    "merged-success",
    "upsert-result",
    "raw-succeed",
}
if VARIANT - _KNOWN:
    raise ValueError(f"unknown BENCH_VARIANT {sorted(VARIANT - _KNOWN)}; known: {sorted(_KNOWN)}")

if "limit-set" in VARIANT:
    TENANT_LIMIT_SET_CALLS = True
if "no-health-check" in VARIANT:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
if "async-commit" in VARIANT:
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"]["OPTIONS"],
        "options": "-c synchronous_commit=off",
    }
if "upsert-result" in VARIANT:
    CELERY_RESULT_BACKEND = "bench.variant_backend.UpsertResultBackend"
if "merged-success" in VARIANT:
    CELERY_RESULT_BACKEND = "bench.variant_backend.MergedSuccessBackend"

if VARIANT & {"merged-success", "raw-succeed"}:
    from typing import Any

    from celery.signals import worker_process_init

    _RAW_SUCCEED_SQL = """
        UPDATE jobs_job SET status = 'succeeded', result = %s::jsonb, error = '',
               finished_at = now()
         WHERE id = %s AND task_id = %s AND status = 'running'
    """

    @worker_process_init.connect
    def _replace_job_succeed(**_: Any) -> None:
        # In each pool child (apps are ready there), replacing the name jobs.runner calls.
        import json

        from django.db import connection

        import jobs.runner

        def merged(**_: Any) -> bool:
            return True  # MergedSuccessBackend records the success with the result

        def raw(*, job_id: str, task_id: str, result: Any) -> bool:
            with connection.cursor() as cursor:
                cursor.execute(_RAW_SUCCEED_SQL, [json.dumps(result), job_id, task_id])
                return bool(cursor.rowcount)

        runner: Any = jobs.runner
        runner.job_succeed = merged if "merged-success" in VARIANT else raw
