"""Public-schema models: who the tenants are, where they live, and the keys that act for them."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin

# Schema names we create or clone into: safe SQL identifiers, never taken raw from input.
SCHEMA_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{2,40}$")
# A tenant's slug is its schema name and also the first label of its host name
# (`<slug>.<BASE_DOMAIN>`), and host names cannot hold "_" (Django answers such a Host with 400).
SLUG_RE = re.compile(r"^[a-z][a-z0-9]{2,40}$")
# Names that would collide with PostgreSQL's own schemas, the template or platform hosts.
RESERVED_SLUGS = frozenset(
    {"public", "tenant_template", "information_schema", "admin", "api", "www", "static", "media"}
)


def validate_schema_name(value: str) -> None:
    if not SCHEMA_NAME_RE.match(value):
        raise ValidationError(
            "A schema name is 3 to 41 characters: a lowercase letter, then lowercase letters, "
            "digits or underscores."
        )
    if value in RESERVED_SLUGS or value.startswith("pg_"):
        raise ValidationError(f"{value!r} is reserved.")


def validate_slug(value: str) -> None:
    """A new tenant's slug: a valid schema name that also works as a host name label."""
    if not SLUG_RE.match(value):
        hint = (
            " Underscores cannot be used: the slug is also the tenant's host name."
            if "_" in value
            else ""
        )
        raise ValidationError(
            "A tenant slug is 3 to 41 characters: a lowercase letter, then lowercase letters or "
            "digits." + hint
        )
    validate_schema_name(value)


class Tenant(TenantMixin):
    """A company. Its schema is named after its validated slug, never after raw input."""

    # Schemas are built by tenants.provisioning (cloned from a template), not by save().
    auto_create_schema = False
    auto_drop_schema = False

    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    is_active = models.BooleanField(default=True, help_text="Suspended tenants submit nothing.")
    # The template schema new tenants are cloned from; never routed, never billed.
    is_template = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Deletion (tenants.services.tenant_delete_schedule): suspended at once, the schema dropped
    # once the retention period is over (tenant_purge); until then it can be undone. The row
    # stays after the purge: invoices and the audit log still name it.
    deletion_due_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When its schema will be dropped."
    )
    purged_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When its schema was dropped."
    )

    class Meta:
        ordering = ["schema_name"]

    def __str__(self) -> str:
        return self.schema_name

    @property
    def slug(self) -> str:
        return self.schema_name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_template:
            # New tenants are held to validate_slug by tenants.services.tenant_create; a row may
            # be older than that rule, so saving it checks only that its schema name is safe.
            validate_schema_name(self.schema_name)
        super().save(*args, **kwargs)


class Domain(DomainMixin):
    """A host name routed to a tenant (`acme.localhost`)."""

    def __str__(self) -> str:
        return self.domain


class ApiKey(models.Model):
    """A tenant's API key. Only a keyed hash of the key is stored (see tenants.apikeys)."""

    SCOPES = ("jobs:read", "jobs:write", "schedules:read", "schedules:write")

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    # The public part of the key; authentication looks it up with this unique index.
    key_id = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(
        max_length=100, help_text="sha256:<hex digest of the key> (see tenants.apikeys)."
    )
    name = models.CharField(max_length=100, blank=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.tenant.schema_name}/{self.key_id} ({self.name})"


class AuditEntry(models.Model):
    """One operator action: who did what to which object, when, and the object before and after.

    Written by the admin (tenants.audit.AuditedAdmin, one entry per change, addition, deletion
    or action on an object) and by the operator commands (tenants.audit.audit_command). Never
    changed once written: the admin shows it read-only. The actor is a copy of the user's name,
    not a foreign key, so that deleting an operator leaves its history whole.
    """

    class Source(models.TextChoices):
        ADMIN = "admin"
        COMMAND = "command"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    actor = models.CharField(max_length=150, help_text="The operator's username or the command.")
    actor_id = models.IntegerField(null=True, blank=True, help_text="The operator's user id.")
    action = models.CharField(max_length=200)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        # The history of one object, newest first (the admin's filter and search).
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor}: {self.action}"
