"""`manage.py tenant_delete`: a tenant is suspended at once and its schema dropped only after
the retention period, undoable until then; the row stays after the purge (invoices and the
audit log name it). Every step writes one audit entry.
"""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from tenants.models import AuditEntry, Tenant


def _schema_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [name])
        return cursor.fetchone() is not None


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("tenant_delete", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def doomed(tenant_db: Any) -> Tenant:
    from billing.services import tenant_create_on_plan

    return tenant_create_on_plan(slug=f"d{uuid.uuid4().hex[:10]}", name="Doomed").tenant


def test_a_deleted_tenant_is_suspended_and_kept_until_its_retention_ends_and_can_be_undone(doomed):
    entries = AuditEntry.objects.count()
    said = _run(doomed.schema_name, "--retention-days", "30")
    assert "unless undone" in said
    doomed.refresh_from_db()
    assert doomed.is_active is False
    assert doomed.deletion_due_at is not None
    assert doomed.deletion_due_at > timezone.now() + timedelta(days=29)
    # Not due: --purge-due leaves it.
    assert "0 tenant(s) purged" in _run("--purge-due")
    assert _schema_exists(doomed.schema_name)

    _run(doomed.schema_name, "--undo")
    doomed.refresh_from_db()
    assert (doomed.is_active, doomed.deletion_due_at) == (True, None)
    assert AuditEntry.objects.count() == entries + 2
    with pytest.raises(CommandError, match="not scheduled"):
        _run(doomed.schema_name, "--undo")


def test_once_due_the_schema_is_dropped_and_the_row_stays(doomed):
    _run(doomed.schema_name, "--retention-days", "0")
    assert _schema_exists(doomed.schema_name)
    said = _run("--purge-due")
    assert f"{doomed.schema_name}: schema dropped" in said
    doomed.refresh_from_db()
    assert doomed.purged_at is not None
    assert not _schema_exists(doomed.schema_name)
    assert Tenant.objects.filter(pk=doomed.pk).exists()
    assert not doomed.domains.exists()
    last = AuditEntry.objects.latest("id")
    assert (last.action, last.object_id) == ("schema dropped", str(doomed.pk))
    with pytest.raises(CommandError, match="nothing to undo"):
        _run(doomed.schema_name, "--undo")


def test_bad_arguments_are_refused_and_change_nothing(doomed):
    with pytest.raises(CommandError, match="No tenant"):
        _run("nosuchtenant")
    with pytest.raises(CommandError, match="0 or more"):
        _run(doomed.schema_name, "--retention-days", "-1")
    with pytest.raises(CommandError, match="takes no tenant"):
        _run(doomed.schema_name, "--purge-due")
    doomed.refresh_from_db()
    assert doomed.is_active is True
    assert doomed.deletion_due_at is None


def test_suspend_and_resume_are_announced_once_for_the_layers_above(doomed):
    from tenants.services import tenant_resumed, tenant_suspended

    heard: list[tuple[str, int]] = []

    def on_suspend(sender: Any, tenant: Tenant, **_: Any) -> None:
        heard.append(("suspended", tenant.pk))

    def on_resume(sender: Any, tenant: Tenant, **_: Any) -> None:
        heard.append(("resumed", tenant.pk))

    tenant_suspended.connect(on_suspend)
    tenant_resumed.connect(on_resume)
    try:
        call_command("tenant_suspend", doomed.schema_name, verbosity=0)
        call_command("tenant_suspend", doomed.schema_name, verbosity=0)  # no change: no signal
        call_command("tenant_resume", doomed.schema_name, verbosity=0)
        _run(doomed.schema_name, "--retention-days", "3")
        _run(doomed.schema_name, "--undo")
    finally:
        tenant_suspended.disconnect(on_suspend)
        tenant_resumed.disconnect(on_resume)
    pk = doomed.pk
    assert heard == [("suspended", pk), ("resumed", pk), ("suspended", pk), ("resumed", pk)]
