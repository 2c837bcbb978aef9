"""Probes for load balancers and Kubernetes, on the public host.

- `/healthz`, liveness: the process answers. No dependency is consulted, so a database outage
  never makes an orchestrator restart every web process at once (it would not help). On a
  tenant host it names the schema the request was routed to, without a query.
- `/readyz`, readiness: PostgreSQL answers, Redis answers, and no migration is waiting; 503 with
  what failed otherwise, so a process is taken out of rotation until it can serve.
"""

from __future__ import annotations

import functools
import logging

import redis
from django.conf import settings
from django.db import DatabaseError
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from saas_platform.lib.db import connection
from saas_platform.lib.state_redis import state_redis

logger = logging.getLogger(__name__)

# Migrations are never unapplied under a running process: once seen applied, not read again
# (loading the migration graph costs tens of milliseconds, too much for every probe).
_migrations_applied = False


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "schema": connection.schema_name})


def _database_problem() -> str | None:
    global _migrations_applied
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if not _migrations_applied:
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
            if pending:
                return f"{len(pending)} migration(s) not applied"
            _migrations_applied = True
    except DatabaseError as exc:
        connection.close()  # a broken connection is not reused by the next probe
        return f"PostgreSQL: {str(exc).strip() or type(exc).__name__}"
    return None


@functools.cache
def _broker_redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2
    )


def _redis_problem() -> str | None:
    try:
        state_redis().ping()
        _broker_redis().ping()
    except redis.RedisError as exc:
        return f"Redis: {exc}"
    return None


def readyz(request: HttpRequest) -> JsonResponse:
    problems = [p for p in (_database_problem(), _redis_problem()) if p]
    if problems:
        logger.warning("not ready: %s", "; ".join(problems))
        response = JsonResponse({"status": "unavailable", "problems": problems}, status=503)
        # The warning above is the record: without this, django.request logs every probe's 503
        # as an ERROR, and Sentry turns each one of a probe every few seconds into an event.
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
    return JsonResponse({"status": "ok"})
