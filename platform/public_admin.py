"""The operator admin, served on the public host only (saas_platform.urls_public).

The public schema holds the tables of SHARED_APPS only. An app listed in TENANT_APPS alone
(django_celery_results: results live in each tenant's schema, never in public) still registers its
models with the admin, whose pages would then query tables that do not exist there and answer 500.
Such models are taken off the site; operators see a tenant's results through the tenant.

Every model admin left is made an audited one (tenants.audit.AuditedAdmin): each change an
operator makes here, in any app's admin, writes one audit entry. The index links the health
view (saas_platform.admin_health).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django_tenants.routers import TenantSyncRouter

from tenants.audit import AuditedAdmin


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
    for model, model_admin in list(admin.site._registry.items()):
        if not router.app_in_list(model._meta.app_label, settings.SHARED_APPS):
            admin.site.unregister(model)
        elif not isinstance(model_admin, AuditedAdmin):
            audited = type(
                f"Audited{type(model_admin).__name__}", (AuditedAdmin, type(model_admin)), {}
            )
            admin.site.unregister(model)
            admin.site.register(model, audited)
    admin.site.index_template = "admin/operator_index.html"
    return admin.site
