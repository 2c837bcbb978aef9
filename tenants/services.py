"""Writes on tenants and their keys (keyword-only, named <entity>_<action>)."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone
from saas_platform.lib.db import connection

from tenants import apikeys
from tenants.models import ApiKey, Domain, Tenant, validate_schema_name, validate_slug
from tenants.provisioning import schema_clone_from_template, template_ensure
from tenants.users import tenant_user_create


@dataclass(frozen=True)
class TenantCreated:
    tenant: Tenant
    domain: str
    admin_email: str | None


def _validate_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"Unknown time zone {name!r}.") from None


def tenant_create(
    *,
    slug: str,
    name: str,
    timezone_name: str = "UTC",
    admin_email: str | None = None,
    admin_password: str | None = None,
    provision: Callable[[Tenant], None] | None = None,
) -> TenantCreated:
    """Create a tenant, its schema (a clone of the template), its domain and its admin user.

    One transaction (DDL is transactional in PostgreSQL): a failure at any step leaves no tenant
    row, no domain and no schema. The template is built first, outside it, the first time only.
    `provision` runs inside that transaction once the tenant exists: the layers above add their
    own rows through it (billing its subscription), so they too are all or nothing.
    """
    validate_slug(slug)
    _validate_timezone(timezone_name)
    template_ensure()
    with transaction.atomic():
        if Tenant.objects.filter(schema_name=slug).exists():
            raise ValidationError(f"A tenant named {slug!r} already exists.")
        tenant = Tenant.objects.create(schema_name=slug, name=name, timezone=timezone_name)
        schema_clone_from_template(slug)
        domain = f"{slug}.{settings.BASE_DOMAIN}"
        Domain.objects.create(domain=domain, tenant=tenant, is_primary=True)
        if admin_email:
            with tenant:
                tenant_user_create(email=admin_email, password=admin_password, is_admin=True)
        if provision is not None:
            provision(tenant)
    return TenantCreated(tenant=tenant, domain=domain, admin_email=admin_email)


class TenantDeletionError(Exception):
    pass


@transaction.atomic
def tenant_delete_schedule(*, tenant: Tenant, retention: timedelta) -> Tenant:
    """Suspend the tenant now and drop its schema after `retention` (tenant_purge); undoable
    until then (tenant_delete_undo)."""
    if tenant.purged_at is not None:
        raise TenantDeletionError(f"{tenant.schema_name} was deleted already.")
    was_active = tenant.is_active
    tenant.is_active = False
    tenant.deletion_due_at = timezone.now() + retention
    tenant.save(update_fields=["is_active", "deletion_due_at"])
    if was_active:
        _announce(tenant, active=False)
    return tenant


@transaction.atomic
def tenant_delete_undo(*, tenant: Tenant) -> Tenant:
    if tenant.purged_at is not None:
        raise TenantDeletionError(f"{tenant.schema_name}'s schema is dropped: nothing to undo.")
    if tenant.deletion_due_at is None:
        raise TenantDeletionError(f"{tenant.schema_name} is not scheduled for deletion.")
    tenant.is_active = True
    tenant.deletion_due_at = None
    tenant.save(update_fields=["is_active", "deletion_due_at"])
    _announce(tenant, active=True)
    return tenant


@transaction.atomic
def tenant_purge(*, tenant: Tenant, now: datetime | None = None) -> Tenant:
    """Drop the schema of a tenant whose deletion is due, its domains and API keys. The row
    stays (invoices and the audit log refer to it), marked purged."""
    now = now or timezone.now()
    if tenant.deletion_due_at is None or tenant.deletion_due_at > now:
        raise TenantDeletionError(f"{tenant.schema_name}'s deletion is not due.")
    if tenant.purged_at is not None:
        return tenant
    validate_schema_name(tenant.schema_name)  # never DROP a name that is not a safe one
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
    Domain.objects.filter(tenant=tenant).delete()
    ApiKey.objects.filter(tenant=tenant).delete()
    tenant.purged_at = now
    tenant.save(update_fields=["purged_at"])
    return tenant


def tenants_due_for_purge(*, now: datetime | None = None) -> list[Tenant]:
    now = now or timezone.now()
    return list(Tenant.objects.filter(deletion_due_at__lte=now, purged_at__isnull=True))


# Sent after a tenant is suspended or resumed (any path: admin, commands, deletion), once
# committed, with `tenant`. The hook for what the layers above hold per tenant: the tenant-aware
# beat skips a suspended tenant's schedules and picks them up again on resume. The API refuses
# a suspended tenant's keys (tenants.selectors) and the dispatcher holds its jobs by itself.
tenant_suspended = Signal()
tenant_resumed = Signal()


def _announce(tenant: Tenant, *, active: bool) -> None:
    signal = tenant_resumed if active else tenant_suspended
    transaction.on_commit(lambda: signal.send(sender=Tenant, tenant=tenant))


def tenant_set_active(*, tenant: Tenant, active: bool) -> Tenant:
    changed = tenant.is_active != active
    tenant.is_active = active
    tenant.save(update_fields=["is_active"])
    if changed:
        _announce(tenant, active=active)
    return tenant


@dataclass(frozen=True)
class ApiKeyCreated:
    api_key: ApiKey
    plaintext: str  # shown once, never stored


def apikey_create(
    *,
    tenant: Tenant,
    name: str = "",
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
) -> ApiKeyCreated:
    chosen = list(ApiKey.SCOPES) if scopes is None else scopes
    unknown = sorted(set(chosen) - set(ApiKey.SCOPES))
    if unknown or not chosen:
        raise ValidationError(
            f"Scopes must be some of {', '.join(ApiKey.SCOPES)}; got {', '.join(chosen) or 'none'}."
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("expires_at must be in the future.")
    generated = apikeys.key_generate()
    api_key = ApiKey.objects.create(
        tenant=tenant,
        key_id=generated.key_id,
        key_hash=apikeys.key_hash(generated.plaintext),
        name=name,
        scopes=chosen,
        expires_at=expires_at,
    )
    return ApiKeyCreated(api_key=api_key, plaintext=generated.plaintext)


def apikey_revoke(*, api_key: ApiKey) -> ApiKey:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked_at"])
    return api_key
