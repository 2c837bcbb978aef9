"""The operator admin, served on the public host only (saas_platform.urls_public).

The public schema holds the tables of SHARED_APPS only. An app listed in TENANT_APPS alone
(django_celery_results: results live in each tenant's schema, never in public) still registers its
models with the admin, whose pages would then query tables that do not exist there and answer 500.
Such models are taken off the site; operators see a tenant's results through the tenant.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django_tenants.routers import TenantSyncRouter


def public_admin_site() -> admin.AdminSite:
    """The admin site without the models whose tables are not in the public schema.

    Asks django-tenants' own router, which decided where each app's tables were migrated to.
    Idempotent: the URLconf and tests may both call it.
    """
    from billing.admin import admin_job_types_set
    from jobs.catalogue import catalogue

    # Wiring is the layer that knows both: billing's forms check job type names against jobs'.
    admin_job_types_set(catalogue())
    router = TenantSyncRouter()
    for model in list(admin.site._registry):
        if not router.app_in_list(model._meta.app_label, settings.SHARED_APPS):
            admin.site.unregister(model)
    return admin.site
