"""Sentry, on only when SENTRY_DSN is set (settings call sentry_init)."""

from __future__ import annotations

import sentry_sdk
from django.core.exceptions import ImproperlyConfigured
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.utils import BadDsn


def sentry_init(*, dsn: str, environment: str | None) -> None:
    try:
        sentry_sdk.init(
            dsn=dsn,
            environment=environment,
            integrations=[DjangoIntegration(), CeleryIntegration(monitor_beat_tasks=False)],
            send_default_pii=False,
        )
    except BadDsn as exc:
        raise ImproperlyConfigured(f"SENTRY_DSN is not a valid Sentry DSN: {exc}") from None
