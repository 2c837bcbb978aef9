"""The product's settings with the changes named in BENCH_VARIANT (comma-separated), for workers.

Used by bench.variants to measure suggested changes without editing the product:
- `limit-set`: TENANT_LIMIT_SET_CALLS, so django-tenants sends `SET search_path` only after the
  tenant changed, not before every query.
- `no-health-check`: CONN_HEALTH_CHECKS off: the tenant signals call close_old_connections()
  around every task, which with health checks on costs a `SELECT 1` per task.
- `async-commit`: the worker's sessions commit with synchronous_commit=off: its status updates
  and result rows stop waiting for the WAL flush (submission keeps waiting for it).
- `no-observability`: no Prometheus metrics (the runner's, dispatcher's and reconciler's calls
  go to a stand-in that does nothing), plain log lines, no Sentry (leave SENTRY_DSN unset):
  bench.observability_overhead's baseline.
- `no-metering`: BILLING_METERING off: no usage counters (the concurrency slot is still freed),
  for the cost of metering per job.
- `unprepared`: DB_PREPARED_STATEMENTS off: the hot path's statements are planned on every
  call, as before they were prepared per session and tenant (saas_platform.lib.db).
- `stock-transport`: kombu's own Redis transport, a new redis-py client for every short broker
  command, as before saas_platform.lib.redis_transport.
(The measured `merged-success` variant, Job row and result row in one statement, is now the
product's own path: jobs.success.)
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
    "no-observability",
    "no-metering",
    "unprepared",
    "stock-transport",
}
if VARIANT - _KNOWN:
    raise ValueError(f"unknown BENCH_VARIANT {sorted(VARIANT - _KNOWN)}; known: {sorted(_KNOWN)}")

if "stock-transport" in VARIANT:
    REDIS_BROKER_TRANSPORT = ""
if "unprepared" in VARIANT:
    DB_PREPARED_STATEMENTS = False
if "limit-set" in VARIANT:
    TENANT_LIMIT_SET_CALLS = True
if "no-health-check" in VARIANT:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
if "async-commit" in VARIANT:
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "options": "-c synchronous_commit=off",
    }
if "no-observability" in VARIANT:
    from typing import Any

    from saas_platform.lib import metrics as _metrics

    class _NoMetric:
        def labels(self, *_: Any) -> _NoMetric:
            return self

        def inc(self, *_: Any) -> None:
            pass

        def observe(self, *_: Any) -> None:
            pass

    for _name in ("JOBS_ENDED", "JOB_QUEUE_SECONDS", "JOB_RUN_SECONDS", "RATE_LIMIT_DEFERRALS",
                  "RECONCILER_RESCUES", "BEAT_LAG_SECONDS"):  # fmt: skip
        setattr(_metrics, _name, _NoMetric())
if "no-metering" in VARIANT:
    BILLING_METERING = False
