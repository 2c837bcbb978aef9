"""URLs of the public host: the operator admin and the API."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from saas_platform.api import api
from saas_platform.public_admin import public_admin_site
from saas_platform.views import healthz

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", public_admin_site().urls),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", api.urls),
]
