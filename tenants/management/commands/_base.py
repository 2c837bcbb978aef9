"""Shared plumbing for the operator commands: resolve a tenant, turn ValidationError into a
clean CommandError (a message and exit status 1, no traceback)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from tenants.models import Tenant


def tenant_by_slug(slug: str) -> Tenant:
    tenant = Tenant.objects.filter(schema_name=slug, is_template=False).first()
    if tenant is None:
        raise CommandError(f"No tenant {slug!r}.")
    return tenant


def as_command_error(exc: ValidationError) -> CommandError:
    return CommandError(" ".join(exc.messages))
