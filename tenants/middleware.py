"""Route each request to a schema by its host.

- the public host (BASE_DOMAIN, or loopback in development) serves the operator admin and the API
  with the public schema;
- `<slug>.<BASE_DOMAIN>` serves that tenant's portal and API with its schema active;
- any other host is a 404, never a silent fall-back to public.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.urls import set_urlconf
from django_tenants.utils import remove_www

from tenants.models import Domain

_DEV_PUBLIC_HOSTS = frozenset({"127.0.0.1", "testserver"})


def _host(request: HttpRequest) -> str:
    return remove_www(request.get_host().split(":")[0]).lower()


class TenantHostMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        host = _host(request)
        connection.set_schema_to_public()
        try:
            if host == settings.BASE_DOMAIN or (settings.DEBUG and host in _DEV_PUBLIC_HOSTS):
                # The API may still activate a tenant here: the one its key belongs to.
                request.tenant = None  # type: ignore[attr-defined]
                request.urlconf = settings.PUBLIC_SCHEMA_URLCONF
                set_urlconf(request.urlconf)
                return self.get_response(request)
            domain = (
                Domain.objects.select_related("tenant")
                .filter(domain=host, tenant__is_template=False)
                .first()
            )
            if domain is None:
                return HttpResponseNotFound(b"No tenant lives at this host.")
            tenant = domain.tenant
            tenant.domain_url = host
            request.tenant = tenant  # type: ignore[attr-defined]
            connection.set_tenant(tenant)
            return self.get_response(request)
        finally:
            # The next request on this thread starts from public, whatever happened here.
            connection.set_schema_to_public()
