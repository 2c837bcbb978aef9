"""The tenant-schemas-celery baseline's tenants: django-tenants' mixins and nothing more."""

from __future__ import annotations

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Client(TenantMixin):
    """A tenant whose schema django-tenants creates and migrates on save (its default)."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.schema_name


class Domain(DomainMixin):
    """Required by django-tenants (TENANT_DOMAIN_MODEL); the benchmark routes no requests."""

    def __str__(self) -> str:
        return self.domain
