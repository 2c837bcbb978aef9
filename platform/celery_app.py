"""The Celery app (`celery -A saas_platform`), configured from Django settings (CELERY_*)."""

from __future__ import annotations

import os

from celery import Celery
from celery.app.defaults import DEFAULTS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas_platform.settings")


def _redis_transport_aliased() -> None:
    """Broker URLs redis:// and rediss:// through REDIS_BROKER_TRANSPORT
    (saas_platform.lib.redis_transport), as kombu's aliases of those schemes rather than
    Celery's `broker_transport`: with the latter, kombu no longer sees the scheme `rediss`, which
    is what turns TLS on for it, and the connection's URL becomes the class's import path, which
    Flower cannot parse. Before any connection of this process's app is made."""
    from django.conf import settings
    from kombu import transport

    path = settings.REDIS_BROKER_TRANSPORT
    if path:
        for scheme in ("redis", "rediss"):
            transport.TRANSPORT_ALIASES[scheme] = path
            # kombu caches a scheme's class once resolved: resolve it again.
            getattr(transport, "_transport_cache", {}).pop(scheme, None)


_redis_transport_aliased()

app = Celery("saas_platform")
# The apps publish through celery.current_app and define shared tasks, never importing this module
# (DESIGN.md, "Layers"); as the default app it is current in every thread, not only this one.
app.set_default()
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery 5.6+ closes the Django connection before and after every task unless this is set; we
# keep connections open and replace only broken or expired ones (tenant_context), which is worth
# several times the throughput with database results. Counted twice per task by Celery.
app.conf.CELERY_DB_REUSE_MAX = 1_000_000


@app.on_after_configure.connect
def _configuration_resolved(sender: Celery, **_: object) -> None:
    """Celery reads its configuration on every message it sends or handles (send_task alone,
    four lookups), and each lookup of a value that no CELERY_* setting sets tries the prefixed
    name, the plain one and the old names in Django's settings (an AttributeError each) before
    Celery's defaults: 51 us for four lookups, a third of send_task's CPU in the dispatcher.
    Settings do not change in a running process, so once Celery has read them (lazily, at the
    first lookup) every value it knows goes into a map of defaults of its own, looked at right
    after what was set on app.conf (14 us for the same four); app.conf's changes stay what was
    set on it. A CELERY_* Django setting changed after that no longer reaches Celery: set
    app.conf instead."""
    conf = sender.conf
    conf.add_defaults({key: conf[key] for key in DEFAULTS if key in conf})


app.autodiscover_tasks(["saas_platform", "jobs", "tenants", "billing"])

# Signal handlers: the tenant's trip through publish/prerun/postrun, the publish time on every
# message, worker incarnations and heartbeats, each task's log and Sentry context.
import saas_platform.lib.broker  # noqa: E402
import saas_platform.lib.tenant_context  # noqa: E402
import saas_platform.lib.worker_liveness  # noqa: E402
import saas_platform.observability.celery_signals  # noqa: E402, F401
