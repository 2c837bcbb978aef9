"""URLs of a tenant host (`<slug>.<BASE_DOMAIN>`): the portal and the API. No operator admin."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path
from saas_platform.api import api
from saas_platform.observability.health import healthz

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", healthz, name="healthz"),
    path("api/v1/", api.urls),
    path("", include("portal.urls")),
]
