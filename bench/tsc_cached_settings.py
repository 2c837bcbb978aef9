"""Django settings for `tsc-cached`: tenant-schemas-celery tuned, as a fair "tuned" comparison.

bench.tsc_settings with the two changes a user tuning tenant-schemas-celery would make:
- its tenant cache: TenantTask reads `task_tenant_cache_seconds` from the Celery config, which
  the CELERY namespace maps from CELERY_TASK_TENANT_CACHE_SECONDS. Each pool process then keeps
  the Tenant object in a module-level dict for that long instead of fetching it for every task.
- CELERY_DB_REUSE_MAX, the product's value and the tuned plain baseline's: Celery keeps the
  Django connection open across tasks instead of closing it before and after each one.
Nothing else changes (TENANT_LIMIT_SET_CALLS stays django-tenants' default, off), so the gap to
tsc-default is those two settings.
"""

from __future__ import annotations

from bench.tsc_settings import *  # noqa: F403

# Longer than a round, so a pool process fetches each tenant about once per round or less; the
# README's own example uses 30 seconds.
CELERY_TASK_TENANT_CACHE_SECONDS = 30
# Read by Celery's Django fixup (app.conf.get("CELERY_DB_REUSE_MAX")) when the worker starts.
CELERY_DB_REUSE_MAX = 1_000_000
