"""URLs of the public host: the operator admin, the API, health probes and metrics."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from saas_platform.admin_health import health_view
from saas_platform.api import api
from saas_platform.observability.health import healthz, readyz
from saas_platform.observability.metrics import metrics_view
from saas_platform.public_admin import public_admin_site

site = public_admin_site()

urlpatterns: list[URLPattern | URLResolver] = [
    # Before the admin's own URLs, whose catch-all would answer 404 for it.
    path("admin/health/", site.admin_view(health_view), name="admin-health"),
    path("admin/", site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", api.urls),
]
