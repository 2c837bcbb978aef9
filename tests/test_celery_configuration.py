"""Celery's configuration, read from Django's CELERY_* settings once and then looked up cheaply
(saas_platform.celery_app)."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings


def test_every_value_celery_knows_is_resolved_into_its_first_map():
    conf: Any = current_app.conf
    assert conf.broker_url == settings.CELERY_BROKER_URL  # finalises the configuration
    # Set by no CELERY_* setting: without the resolution, found only in Celery's defaults after
    # a failed lookup of each of its names in Django's settings.
    assert conf.changes["task_protocol"] == 2
    assert conf.changes["task_send_sent_event"] is False
    # Set by CELERY_* settings, under Celery's own names.
    assert conf.changes["broker_url"] == settings.CELERY_BROKER_URL
    assert conf.changes["task_queues"] == settings.CELERY_TASK_QUEUES
    assert conf.get("CELERY_DB_REUSE_MAX") == 1_000_000  # the app's own, set before


def test_a_lookup_no_longer_asks_djangos_settings():
    conf: Any = current_app.conf
    conf.task_protocol  # noqa: B018 (finalises the configuration)
    asked: list[str] = []
    wrapped = type(settings._wrapped)
    original = wrapped.__getattribute__

    def counting(self: Any, name: str) -> Any:
        asked.append(name)
        return original(self, name)

    wrapped.__getattribute__ = counting  # type: ignore[method-assign]
    try:
        for _ in range(3):
            conf.task_always_eager  # noqa: B018
            conf.task_inherit_parent_priority  # noqa: B018
    finally:
        wrapped.__getattribute__ = original  # type: ignore[method-assign]
    assert asked == []
