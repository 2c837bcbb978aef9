"""How the tenant travels with a Celery task and is re-activated in the worker.

1. Publishing: `before_task_publish` writes the active tenant into the message headers
   (`tenant_id`, the primary key, authoritative; `tenant_schema`, for logs). It always overwrites:
   the header is never taken from the caller. Published from public, the headers are removed,
   except on a task's retry of itself, which keeps its own message's tenant.
2. Running: `task_prerun` reads the headers from the task's own request and activates that
   tenant on this thread's database connection; `task_postrun` returns to public. Nothing is kept
   on the (shared) task object, so thread pools are safe.
3. Writes from the worker's main process (worker lost, hard time limit, revoked) don't pass through
   prerun; the results backend activates the tenant from the request itself (`tenant_activated`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import current_task
from celery.signals import before_task_publish, task_postrun, task_prerun
from django.db import connections
from django_tenants.utils import get_public_schema_name, get_tenant_model
from saas_platform.lib.db import connection

TENANT_ID_HEADER = "tenant_id"
TENANT_SCHEMA_HEADER = "tenant_schema"

# Tenant rows by primary key, per process. A tenant's schema name never changes, so the only
# staleness is a deleted tenant, which the TTL bounds; suspension is enforced at submission.
_CACHE_TTL_SECONDS = 60.0
_cache: dict[int, tuple[float, Any]] = {}
_cache_lock = threading.Lock()


class UnknownTenant(LookupError):
    pass


def active_tenant() -> Any | None:
    """The tenant whose schema is active on this thread's connection, or None for public."""
    tenant = getattr(connection, "tenant", None)
    if tenant is None or connection.schema_name == get_public_schema_name():
        return None
    if getattr(tenant, "pk", None) is None:
        return None  # a FakeTenant made by set_schema(): not a real tenant, carries no id
    return tenant


def tenant_by_id(tenant_id: int) -> Any:
    now = time.monotonic()
    hit = _cache.get(tenant_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    # The tenant model is found through settings (TENANT_MODEL): this library knows no app.
    tenant_model = get_tenant_model()
    # The lookup must run in public, whatever the caller had active.
    previous = connection.tenant
    connection.set_schema_to_public()
    try:
        tenant = tenant_model.objects.filter(pk=tenant_id).first()
    finally:
        connection.set_tenant(previous)
    if tenant is None:
        raise UnknownTenant(f"tenant {tenant_id} does not exist")
    with _cache_lock:
        _cache[tenant_id] = (now + _CACHE_TTL_SECONDS, tenant)
    return tenant


def headers_tenant_id(source: Any) -> int | None:
    """The tenant id from a task request, a Context or a headers dict; None if absent."""
    if isinstance(source, dict):
        value = source.get(TENANT_ID_HEADER)
    else:
        value = getattr(source, TENANT_ID_HEADER, None)
        if value is None:
            headers = getattr(source, "headers", None) or {}
            value = headers.get(TENANT_ID_HEADER) if isinstance(headers, dict) else None
    if value is None:
        return None
    return int(value)


def tenant_activate(tenant_id: int | None) -> None:
    """Make `tenant_id`'s schema (or public, for None) active on this thread's connection."""
    if tenant_id is None:
        tenant_enter(None)
        return
    current = active_tenant()
    if current is not None and current.pk == tenant_id:
        return  # already there: skip set_tenant, which would force another SET search_path
    connection.set_tenant(tenant_by_id(tenant_id))


def tenant_enter(tenant: Any | None) -> None:
    """Like tenant_activate, for a tenant row already at hand (None: public).

    django-tenants issues a new `SET search_path` after every switch, even to the schema already
    active; skipping no-op switches saves that round trip on most requests and tasks.
    """
    if tenant is None:
        if connection.schema_name != get_public_schema_name():
            connection.set_schema_to_public()
        return
    current = active_tenant()
    if current is None or current.pk != tenant.pk:
        connection.set_tenant(tenant)
    elif current is not tenant:
        # The same schema, a newer read of its row (a changed time zone, say): keep the row
        # current without the SET search_path (what set_tenant would do on top).
        connection.tenant = tenant


@contextmanager
def tenant_activated(tenant_id: int | None) -> Iterator[None]:
    """Activate a tenant for a block, then restore whatever was active before."""
    previous = connection.tenant
    tenant_activate(tenant_id)
    try:
        yield
    finally:
        if connection.tenant is not previous:
            connection.set_tenant(previous)


def _own_retry_tenant(headers: dict[str, Any]) -> tuple[int, Any] | None:
    """The running task's own tenant (id, schema) when `headers` are its retry's (same task id).

    A task whose tenant could not be activated (the database was down when it started) retries
    from public: its retry keeps the tenant its message was stamped with, or it would run in
    public and its job would be stranded. Taken from the platform's own stamp, never the caller.
    """
    request = getattr(current_task, "request", None) if current_task else None
    if request is None or request.id is None or headers.get("id") != request.id:
        return None
    tenant_id = headers_tenant_id(request)
    if tenant_id is None:
        return None
    return tenant_id, getattr(request, TENANT_SCHEMA_HEADER, None)


@before_task_publish.connect
def _stamp_tenant_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    tenant = active_tenant()
    if tenant is None:
        own = _own_retry_tenant(headers)
        if own is not None:
            headers[TENANT_ID_HEADER], headers[TENANT_SCHEMA_HEADER] = own
            return
        headers.pop(TENANT_ID_HEADER, None)
        headers.pop(TENANT_SCHEMA_HEADER, None)
        return
    headers[TENANT_ID_HEADER] = tenant.pk
    headers[TENANT_SCHEMA_HEADER] = tenant.schema_name


def close_broken_or_expired_connections() -> None:
    """Close this thread's connections that errored or outlived CONN_MAX_AGE; keep the rest.

    Django's close_old_connections also arms a health check (`SELECT 1`) before the next query,
    a round trip per task on the hot path. A connection that broke in between is instead found
    by the task's first query (the claim), which sends the message again later without using an
    attempt (jobs.runner), and is closed here after that task.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        expired = conn.close_at is not None and time.monotonic() >= conn.close_at
        if conn.errors_occurred or expired:
            conn.close()


@task_prerun.connect
def _activate_task_tenant(task: Any = None, **_: Any) -> None:
    tenant_activate(headers_tenant_id(task.request) if task is not None else None)


@task_postrun.connect
def _return_to_public(**_: Any) -> None:
    # The tenant leaves with the task, and a connection that errored during it goes too.
    close_broken_or_expired_connections()
    connection.set_schema_to_public()
