"""The operator console: the admin is the public host's only (404 on a tenant host, a tenant
admin's credentials do not open it), the health view, and the audit log (one entry per admin
change, admin action and operator command; read-only in the admin).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.metering import usage_count
from billing.models import Plan, Subscription, UsageMonth
from tenants.models import AuditEntry, Tenant
from tests.test_admin_limits import _form
from tests.test_admin_operator import _parse, _signed_in_client, operator  # noqa: F401  # a fixture

# Rows with no schema are marked as purged tenants' rows are (a schema dropped, the row kept):
# then no beat, reconciler or retention sweep of a later test visits a schema that is not there.
NO_SCHEMA = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def spare(tenant_db: Any) -> Tenant:
    """A tenant row of this test's own (no schema: the admin pages here read public tables)."""
    suffix = uuid.uuid4().hex[:10]
    [tenant] = Tenant.objects.bulk_create(
        [Tenant(schema_name=f"op{suffix}", name="Spare", purged_at=NO_SCHEMA)]
    )
    Subscription.objects.create(tenant=tenant, plan=Plan.objects.get(slug="free"))
    return tenant


def _entries(tenant: Tenant) -> list[AuditEntry]:
    return list(
        AuditEntry.objects.filter(object_type="tenants.tenant", object_id=str(tenant.pk)).order_by(
            "id"
        )
    )


def test_the_admin_on_a_tenant_host_is_a_404(tenant_db, operator):  # noqa: F811
    host = f"acme.{'localhost'}"
    assert Client(HTTP_HOST=host).get("/admin/").status_code == 404
    assert Client(HTTP_HOST=host).get("/admin/login/").status_code == 404
    assert Client(HTTP_HOST=host).get("/admin/health/").status_code == 404


def test_a_tenant_admins_credentials_do_not_open_the_admin(tenant_db):
    client = Client(HTTP_HOST="localhost")
    form = client.get("/admin/login/")
    assert form.status_code == 200
    answer = client.post(
        "/admin/login/?next=/admin/",
        {"username": "alice@acme.example", "password": "alice-pw-1", "next": "/admin/"},
    )
    assert answer.status_code == 200  # the form again, with its error
    assert b"Please enter the correct" in answer.content
    assert client.get("/admin/").status_code == 302


def test_the_health_view_shows_workers_queues_and_nearest_tenants_in_constant_queries(
    operator,  # noqa: F811
    spare,
):
    UsageMonth.objects.create(
        tenant=spare,
        month=timezone.now().date().replace(day=1),
        jobs=9500,
        rolled_up_at=timezone.now(),
    )
    usage_count(tenant_id=spare.pk, attempts=1, failed=True)
    client, _ = _signed_in_client()
    index = client.get("/admin/")
    assert b'href="/admin/health/"' in index.content
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/admin/health/")
    assert page.status_code == 200
    text = page.content.decode()
    for heading in (
        "Workers online",
        "Queue depths",
        "Attempts ended per minute",
        "Tenants with waiting jobs",
        "Failures per tenant",
        "nearest their monthly job quota",
    ):
        assert heading in text
    # The free plan's quota is 10,000: 9,500 is 95%, over the alarm.
    assert spare.schema_name in text
    assert "95.0% (alarm)" in text
    # Session, user, and the page's own few reads: none per tenant, none in a tenant schema.
    assert len(queries) <= 8, [q["sql"][:120] for q in queries.captured_queries]
    assert not [q for q in queries.captured_queries if "search_path" in q["sql"].lower()]


def test_every_admin_change_and_action_writes_one_audit_entry(operator, spare):  # noqa: F811
    client, _ = _signed_in_client()
    url = f"/admin/tenants/tenant/{spare.pk}/change/"
    fields = _form(client, url, "tenant_form")
    saved = client.post(url, {**fields, "name": "Spare renamed"})
    assert saved.status_code == 302, saved.content[:3000]
    [change] = _entries(spare)
    assert change.source == "admin"
    assert change.actor == "olive"
    assert change.before["name"] == "Spare"
    assert change.after["name"] == "Spare renamed"
    assert change.action.startswith("changed")

    changelist = "/admin/tenants/tenant/"
    token = _parse(client.get(changelist).content).csrf_token
    answer = client.post(
        changelist,
        {"action": "suspend", "_selected_action": [str(spare.pk)], "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 302
    spare.refresh_from_db()
    assert spare.is_active is False
    entries = _entries(spare)
    assert len(entries) == 2
    assert entries[-1].action == "suspended"
    assert (entries[-1].before["is_active"], entries[-1].after["is_active"]) == (True, False)
    # Suspending a suspended tenant changes nothing and writes nothing.
    client.post(
        changelist,
        {"action": "suspend", "_selected_action": [str(spare.pk)], "csrfmiddlewaretoken": token},
    )
    assert len(_entries(spare)) == 2


def test_every_operator_command_writes_one_audit_entry(spare):
    call_command("tenant_suspend", spare.schema_name, verbosity=0)
    call_command("tenant_resume", spare.schema_name, verbosity=0)
    call_command("plan_set", spare.schema_name, "pro", verbosity=0)
    entries = AuditEntry.objects.filter(source="command").order_by("-id")[:3]
    actions = [e.action for e in reversed(list(entries))]
    assert actions == ["suspended", "resumed", "plan set to pro"]
    assert entries[0].before["plan"] != entries[0].after["plan"]
    assert all(e.actor.startswith(("tenant_", "plan_set")) for e in entries)


def test_the_audit_log_is_read_only_in_the_admin(operator, spare):  # noqa: F811
    call_command("tenant_suspend", spare.schema_name, verbosity=0)
    entry = AuditEntry.objects.latest("id")
    client, _ = _signed_in_client()
    assert client.get("/admin/tenants/auditentry/").status_code == 200
    assert client.get(f"/admin/tenants/auditentry/{entry.pk}/change/").status_code == 200
    assert client.get("/admin/tenants/auditentry/add/").status_code == 403
    token = _parse(client.get("/admin/tenants/auditentry/").content).csrf_token
    forged = client.post(
        f"/admin/tenants/auditentry/{entry.pk}/change/",
        {"action": "forged", "csrfmiddlewaretoken": token},
    )
    assert forged.status_code == 403
    assert client.get(f"/admin/tenants/auditentry/{entry.pk}/delete/").status_code == 403
    entry.refresh_from_db()
    assert entry.action == "suspended"


def test_the_audit_log_keeps_no_password_or_key_hash(operator, tenant_db):  # noqa: F811
    from tenants.audit import snapshot
    from tenants.models import ApiKey

    user = snapshot(operator)
    assert user is not None
    assert user["username"] == "olive"
    assert "password" not in user
    api_key = snapshot(ApiKey.objects.filter(tenant=tenant_db.acme).first())
    assert api_key is not None
    assert api_key["tenant"] == tenant_db.acme.pk
    assert "key_hash" not in api_key
