"""The tenant-schemas-celery baseline's Celery app: `celery -A bench.tsc_app worker`.

tenant-schemas-celery's CeleryApp: every task is its TenantTask, every message published with a
schema active carries that schema's name in a `_schema_name` header, and its task_prerun handler
(connected when tenant_schemas_celery.app is imported) activates that schema before the task
runs, its task_postrun handler returns to the schema that was active before. The settings module
(bench.tsc_settings or bench.tsc_cached_settings) decides its cache and connection reuse.
"""

from __future__ import annotations

import os

from tenant_schemas_celery.app import CeleryApp

# Before the app is made: Celery installs its Django fixup only when this is set.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.tsc_settings")

app = CeleryApp("bench_tsc")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="bench.add")
def add(x: int, y: int) -> int:
    return x + y
