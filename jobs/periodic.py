"""Platform-wide periodic work scheduled by beat (see CELERY_BEAT_SCHEDULE in settings)."""

from __future__ import annotations

import logging

from saas_platform.celery_app import app
from saas_platform.tenant_context import tenant_activated

logger = logging.getLogger(__name__)


@app.task(name="platform.jobs_reconcile", ignore_result=True, expires=60)
def jobs_reconcile() -> dict[str, int]:
    """Republish stranded jobs and release due scheduled jobs, tenant by tenant.

    One tenant's failure is logged and does not stop the others.
    """
    from jobs.maintenance import tenant_reconcile
    from tenants.models import Tenant

    totals = {"tenants": 0, "republished": 0, "released": 0, "rescued": 0, "errors": 0}
    # Suspended tenants included: work they had accepted still has to finish.
    for tenant_id in Tenant.objects.filter(is_template=False).values_list("pk", flat=True):
        try:
            with tenant_activated(tenant_id):
                report = tenant_reconcile()
        except Exception:
            totals["errors"] += 1
            logger.exception("reconcile failed for tenant %s", tenant_id)
            continue
        totals["tenants"] += 1
        totals["republished"] += report.republished
        totals["released"] += report.released
        totals["rescued"] += report.rescued
    return totals
