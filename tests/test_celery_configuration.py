"""Celery's configuration, read from Django's CELERY_* settings once and then looked up cheaply
(saas_platform.celery_app)."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings


def test_every_value_celery_knows_is_resolved_into_a_map_after_the_changes():
    conf: Any = current_app.conf
    assert conf.broker_url == settings.CELERY_BROKER_URL  # finalises the configuration
    resolved = conf.maps[1]
    # Set by no CELERY_* setting: without the resolution, found only in Celery's defaults after
    # a failed lookup of each of its names in Django's settings.
    assert resolved["task_protocol"] == 2
    assert resolved["task_send_sent_event"] is False
    # Set by CELERY_* settings, under Celery's own names.
    assert resolved["broker_url"] == settings.CELERY_BROKER_URL
    assert resolved["task_queues"] == settings.CELERY_TASK_QUEUES
    # What was set on app.conf itself stays apart, and first.
    assert "task_protocol" not in conf.changes
    assert conf.get("CELERY_DB_REUSE_MAX") == 1_000_000


def test_a_lookup_no_longer_asks_djangos_settings(monkeypatch):
    conf: Any = current_app.conf
    conf.task_protocol  # noqa: B018 (finalises the configuration)
    asked: list[str] = []
    wrapped = type(settings._wrapped)
    original = wrapped.__getattribute__

    def counting(self: Any, name: str) -> Any:
        if name.startswith("CELERY"):
            asked.append(name)
        return original(self, name)

    monkeypatch.setattr(wrapped, "__getattribute__", counting)
    for _ in range(3):
        conf.task_always_eager  # noqa: B018
        conf.task_inherit_parent_priority  # noqa: B018
    assert asked == []
