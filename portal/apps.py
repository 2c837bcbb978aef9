from __future__ import annotations

from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The tenant portal at `<slug>.<BASE_DOMAIN>`: server-rendered pages over the same services
    and selectors as the API (jobs.services, jobs.selectors, tenants.services, billing.usage)."""

    name = "portal"
