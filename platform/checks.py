"""System checks for configuration mistakes (`manage.py check`, run at start-up)."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register


@register()
def check_tenancy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    if "django_celery_results" in settings.SHARED_APPS:
        problems.append(
            Error(
                "django_celery_results is in SHARED_APPS.",
                hint="Keep it in TENANT_APPS only, so results never land in the public schema.",
                id="saas_platform.E001",
            )
        )
    if not settings.CELERY_TASK_ACKS_LATE or not settings.CELERY_TASK_REJECT_ON_WORKER_LOST:
        problems.append(
            Error(
                "Jobs could be lost when a worker dies.",
                hint="Set CELERY_TASK_ACKS_LATE and CELERY_TASK_REJECT_ON_WORKER_LOST.",
                id="saas_platform.E002",
            )
        )
    if settings.CELERY_BROKER_VISIBILITY_TIMEOUT <= settings.CELERY_TASK_TIME_LIMIT:
        problems.append(
            Error(
                "The broker visibility timeout is not longer than the task time limit.",
                hint="A running job would be delivered to a second worker.",
                id="saas_platform.E003",
            )
        )
    for network in settings.OUTBOUND_HTTP_ALLOWED_NETWORKS:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            problems.append(
                Error(
                    f"OUTBOUND_HTTP_ALLOWED_NETWORKS has {network!r}, which is not a network.",
                    hint="Give comma-separated CIDRs such as 10.0.0.0/8,192.168.1.0/24.",
                    id="saas_platform.E004",
                )
            )
    if not settings.DEBUG and settings.BASE_DOMAIN == "localhost":
        problems.append(
            Warning(
                "BASE_DOMAIN is localhost with DEBUG off.",
                hint="Set BASE_DOMAIN to the domain tenants live under.",
                id="saas_platform.W001",
            )
        )
    return problems
