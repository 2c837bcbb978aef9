"""Platform tasks: run in the public schema, for operators and health checks."""

from __future__ import annotations

import time

from django.core.cache import cache
from saas_platform.celery_app import app
from saas_platform.lib.db import connection
from saas_platform.lib.state_redis import state_key, state_redis
from saas_platform.lib.tenant_context import active_tenant

PROBE_TTL_SECONDS = 300


@app.task(name="platform.schema_probe", ignore_result=True)
def schema_probe(key: str) -> None:
    """Writes which schema the worker's database session is on to the cache under `key`.

    A round trip through the broker, a worker and the database: health checks use it, and it
    shows that a worker returns to public between tasks.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        row = cursor.fetchone()
    tenant = active_tenant()
    cache.set(
        key,
        {
            "current_schema": row[0] if row else None,
            "tenant": tenant.schema_name if tenant else None,
        },
        PROBE_TTL_SECONDS,
    )


@app.task(name="platform.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    """A static entry of CELERY_BEAT_SCHEDULE (settings), published by the same beat as the
    tenants' schedules: when it last ran, and in which schema (public), for operators."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        row = cursor.fetchone()
    state_redis().hset(
        state_key("beat", "heartbeat"),
        mapping={"at": time.time(), "schema": row[0] if row else ""},
    )
