"""Building tenant schemas fast: clone a migrated template instead of replaying migrations.

The template is itself a (never routed) Tenant row, `tenant_template`, so `migrate` keeps it
current like every other tenant schema. Cloning copies its tables and its rows: the
django_migrations history (so the clone needs no fake migrate), content types and permissions.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django_tenants.utils import schema_exists
from saas_platform.lib.db import connection

from tenants.models import Tenant
from tenants.schema_clone import schema_clone

# pg_advisory_xact_lock key: one template build at a time across processes.
_TEMPLATE_LOCK = 0x7E4A17


def template_ensure() -> Tenant:
    """The template tenant, migrated; built the slow way (full migrate) the first time only."""
    name = settings.TENANT_BASE_SCHEMA
    template = Tenant.objects.filter(schema_name=name).first()
    if template is not None and schema_exists(name):
        return template
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_TEMPLATE_LOCK])
        template, _ = Tenant.objects.get_or_create(
            schema_name=name,
            defaults={
                "name": "Template for new tenants",
                "is_template": True,
                "is_active": False,
            },
        )
        if not schema_exists(name):
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE SCHEMA "{name}"')
            call_command(
                "migrate_schemas", tenant=True, schema_name=name, interactive=False, verbosity=0
            )
    connection.set_schema_to_public()
    return template


def schema_clone_from_template(schema_name: str) -> None:
    """Create `schema_name` as a copy of the migrated template, tables and rows.

    tenants.schema_clone rather than django-tenants' CloneSchema: the latter's catalog queries
    scan every schema, so each tenant took longer to create than the one before.
    """
    template = template_ensure()
    schema_clone(source=template.schema_name, target=schema_name)
    connection.set_schema_to_public()
