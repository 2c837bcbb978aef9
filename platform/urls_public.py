"""URLs of the public host: the operator admin and the API."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path
from saas_platform.api import api
from saas_platform.views import healthz

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", api.urls),
]
