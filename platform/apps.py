from __future__ import annotations

from django.apps import AppConfig


class PlatformConfig(AppConfig):
    name = "saas_platform"
    label = "saas_platform"
    verbose_name = "Platform"

    def ready(self) -> None:
        # Load the Celery app (and the tenant signal handlers) in every Django process, so that
        # publishing from web processes and management commands stamps the tenant header.
        from saas_platform import (
            celery_app,  # noqa: F401
            checks,  # noqa: F401
        )
