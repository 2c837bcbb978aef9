"""Django settings for the tenant-schemas-celery baseline (`tsc-default`), with its defaults.

What a user would run instead of this product: django-tenants with one schema per tenant,
tenant-schemas-celery's CeleryApp and TenantTask (bench.tsc_app) carrying the schema name in each
message, and django-celery-results stored in the tenant's schema. Everything else comes from
bench.baseline_settings, so that the Celery settings (acks_late, prefetch 1, JSON, extended
results, logging) are the plain baselines' and the product's by construction, not by copy.

Defaults here means: no tenant cache (the Tenant row is fetched for every task), Celery's own
database connection handling (closed before and after every task), and django-tenants' defaults
(`SET search_path` whenever a cursor is opened, not only after a switch: TENANT_LIMIT_SET_CALLS
is off). The tuned configuration is bench.tsc_cached_settings.
"""

from __future__ import annotations

from bench.baseline_settings import *  # noqa: F403
from bench.baseline_settings import DATABASES

SHARED_APPS = ["django_tenants", "bench.tsc_tenants", "django.contrib.contenttypes"]
# As in the product, django_celery_results is a tenant app only: a result written while the
# schema is still public fails instead of landing in the public schema unnoticed.
TENANT_APPS = ["django.contrib.contenttypes", "django_celery_results"]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]
TENANT_MODEL = "tsc_tenants.Client"
TENANT_DOMAIN_MODEL = "tsc_tenants.Domain"
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]

# The baseline's connection settings (the product's CONN_MAX_AGE and health checks) on
# django-tenants' backend, which is what switches search_path.
DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"
