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


def tenant_set_active_audited(*, command: str, slug: str, active: bool) -> Tenant:
    """tenant_suspend / tenant_resume: the change and its audit entry."""
    from tenants.audit import audit_command, snapshot
    from tenants.services import tenant_set_active

    tenant = tenant_by_slug(slug)
    before = snapshot(tenant)
    tenant = tenant_set_active(tenant=tenant, active=active)
    verb = "resumed" if active else "suspended"
    audit_command(command=command, action=verb, obj=tenant, before=before, after=snapshot(tenant))
    return tenant
