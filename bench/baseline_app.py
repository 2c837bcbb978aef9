"""The baseline Celery app: `celery -A bench.baseline_app worker` with an `add` task.

BENCH_DB_REUSE=1 sets CELERY_DB_REUSE_MAX like saas_platform.celery_app does, so Celery keeps
the Django connection open across tasks (the tuned baseline); unset, Celery 5.6+ closes it before
and after every task (Celery's defaults).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baseline_settings")

app = Celery("bench_baseline")
app.config_from_object("django.conf:settings", namespace="CELERY")
if os.environ.get("BENCH_DB_REUSE") == "1":
    # The product's value (platform/celery_app.py).
    app.conf.CELERY_DB_REUSE_MAX = 1_000_000


@app.task(name="bench.add")
def add(x: int, y: int) -> int:
    return x + y
