"""Route each request to a schema by its host.

- the public host (BASE_DOMAIN, or loopback in development) serves the operator admin and the API
  with the public schema;
- `<slug>.<BASE_DOMAIN>` serves that tenant's portal and API with its schema active;
- any other host is a 404, never a silent fall-back to public.

The host-to-tenant map is cached per process for a few seconds: it changes only when operators
add or remove domains, and the lookup was a third of an API submit's CPU. Whatever must take
effect at once (a revoked key, a suspended tenant) is checked by the API's key lookup, uncached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.urls import set_urlconf
from django_tenants.postgresql_backend.base import FakeTenant
from django_tenants.utils import get_public_schema_name, remove_www
from saas_platform.lib.db import connection
from saas_platform.lib.telemetry import context_bind
from saas_platform.lib.tenant_context import tenant_enter

from tenants.models import Domain, Tenant

logger = logging.getLogger(__name__)

_DEV_PUBLIC_HOSTS = frozenset({"127.0.0.1", "testserver"})
HOST_CACHE_SECONDS = 5.0
_HOST_CACHE_MAX = 10_000  # unknown hosts are cached too; bound what a host-header scan can grow
_host_cache: dict[str, tuple[float, Tenant | None]] = {}
_host_cache_lock = threading.Lock()


def tenant_for_host(host: str) -> Tenant | None:
    """The tenant living at `host`, or None; from the cache when it is fresh."""
    now = time.monotonic()
    hit = _host_cache.get(host)
    if hit is not None and hit[0] > now:
        return hit[1]
    domain = (
        Domain.objects.select_related("tenant")
        .filter(domain=host, tenant__is_template=False)
        .first()
    )
    tenant = domain.tenant if domain is not None else None
    with _host_cache_lock:
        if len(_host_cache) >= _HOST_CACHE_MAX:
            _host_cache.clear()
        _host_cache[host] = (now + HOST_CACHE_SECONDS, tenant)
    return tenant


def host_cache_clear() -> None:
    with _host_cache_lock:
        _host_cache.clear()


def _host(request: HttpRequest) -> str:
    return remove_www(request.get_host().split(":")[0]).lower()


class TenantHostMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        host = _host(request)
        # Every request sets its schema here, explicitly, whatever the previous request on this
        # connection left (tenant_enter skips the switch, and a SET search_path, when the schema
        # is already the right one).
        if host == settings.BASE_DOMAIN or (settings.DEBUG and host in _DEV_PUBLIC_HOSTS):
            tenant_enter(None)
            # django-tenants' admin templates read request.tenant.schema_name; public has no
            # Tenant row, so it gets the stand-in the connection itself uses for public. It has
            # no pk: the API tells it from a tenant by that, and still activates the key's tenant.
            request.tenant = FakeTenant(schema_name=get_public_schema_name())  # type: ignore[attr-defined]
            # Django honours request.urlconf; django-stubs does not declare it.
            request.urlconf = settings.PUBLIC_SCHEMA_URLCONF  # type: ignore[attr-defined]
            set_urlconf(settings.PUBLIC_SCHEMA_URLCONF)
            return self.get_response(request)
        try:
            # Domain and Tenant live in public, which every tenant's search_path includes: the
            # lookup needs no switch first.
            tenant = tenant_for_host(host)
        except (OperationalError, InterfaceError) as exc:
            # The database is down: a 503 (the API's envelope is added by api_body_limit).
            logger.error("database unavailable: %s", exc)
            connection.close_if_unusable_or_obsolete()
            unavailable = HttpResponse(b"Service unavailable.", status=503)
            unavailable["Retry-After"] = "5"
            return unavailable
        if tenant is None:
            tenant_enter(None)
            return HttpResponseNotFound(b"No tenant lives at this host.")
        request.tenant = tenant  # type: ignore[attr-defined]
        tenant_enter(tenant)
        context_bind(tenant=tenant.schema_name)  # on the request's log lines and Sentry events
        return self.get_response(request)
