"""The audit log of operator actions (tenants.models.AuditEntry).

Two ways in: `AuditedAdmin`, a ModelAdmin mixin that writes one entry for every addition,
change and deletion made through the admin (the wiring puts it on every registered admin,
saas_platform.public_admin), and `audit_command` for the operator commands. Admin actions
(suspend, resume, ...) call `audit_admin_action` once per object they change.

Entries carry JSON snapshots of the object before and after; a ModelAdmin may widen the
snapshot (`audit_snapshot`) with what its inlines edit, so a change of a tenant's plan shows in
the tenant's entry.
"""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.contrib import admin
from django.core import serializers
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from tenants.models import AuditEntry

_BEFORE_ATTR = "_audit_before"
# Never copied into the log: a password's or a key's hash is a secret even hashed.
SECRET_FIELDS = frozenset({"password", "key_hash"})


def snapshot(obj: models.Model | None) -> dict[str, Any] | None:
    """The object's fields as JSON values (dates as ISO 8601 text)."""
    if obj is None or obj.pk is None:
        return None
    fields = {
        name: value
        for name, value in serializers.serialize("python", [obj])[0]["fields"].items()
        if name not in SECRET_FIELDS
    }
    data: dict[str, Any] = json.loads(json.dumps({"pk": obj.pk, **fields}, cls=DjangoJSONEncoder))
    return data


def _label(obj: models.Model | None) -> tuple[str, str, str]:
    if obj is None:
        return "", "", ""
    return obj._meta.label_lower, str(obj.pk), str(obj)[:200]


def audit_record(
    *,
    source: str,
    actor: str,
    action: str,
    actor_id: int | None = None,
    obj: models.Model | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    object_type, object_id, object_repr = _label(obj)
    return AuditEntry.objects.create(
        source=source,
        actor=actor[:150],
        actor_id=actor_id,
        action=action[:200],
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr,
        before=before,
        after=after,
    )


def audit_command(
    *,
    command: str,
    action: str,
    obj: models.Model | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """One entry for a management command's change; the actor is the command and the OS user
    who ran it (a script has no operator account)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        user = "unknown"
    return audit_record(
        source=AuditEntry.Source.COMMAND,
        actor=f"{command} ({user})",
        action=action,
        obj=obj,
        before=before,
        after=after,
    )


def audit_admin_action(
    request: HttpRequest,
    *,
    action: str,
    obj: models.Model,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    user = request.user
    return audit_record(
        source=AuditEntry.Source.ADMIN,
        actor=user.get_username(),
        actor_id=user.pk,
        action=action,
        obj=obj,
        before=before,
        after=after,
    )


class AuditedAdmin(admin.ModelAdmin[Any]):
    """Writes an AuditEntry wherever Django's admin writes its own LogEntry: `log_addition`,
    `log_change` and `log_deletions` are called once per object and form submission, after the
    object and its inlines are saved. The "before" snapshot is taken when the change form loads
    the object (`get_object`), before the form touches it."""

    def audit_snapshot(self, obj: models.Model | None) -> dict[str, Any] | None:
        return snapshot(obj)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if request.method == "POST" and obj is not None:
            setattr(request, _BEFORE_ATTR, self.audit_snapshot(obj))
        return obj

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        audit_admin_action(
            request, action="added", obj=obj, before=None, after=self._fresh_snapshot(obj)
        )
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        audit_admin_action(
            request,
            action=_change_text(message),
            obj=obj,
            before=getattr(request, _BEFORE_ATTR, None),
            after=self._fresh_snapshot(obj),
        )
        return super().log_change(request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        # Called before the objects are deleted; a queryset is evaluated once and cached, so
        # Django's own logging below sees the same objects.
        for obj in queryset:
            audit_admin_action(
                request, action="deleted", obj=obj, before=self.audit_snapshot(obj), after=None
            )
        return super().log_deletions(request, queryset)

    def _fresh_snapshot(self, obj: models.Model) -> dict[str, Any] | None:
        # Re-read: inlines saved after the object may have changed what the snapshot shows.
        fresh = type(obj)._default_manager.filter(pk=obj.pk).first()
        return self.audit_snapshot(fresh if fresh is not None else obj)


def _change_text(message: Any) -> str:
    """Django's change message is a list of {"changed": {"fields": [...]}}-like dicts."""
    if isinstance(message, list) and message:
        parts = []
        for item in message:
            for verb, detail in item.items():
                names = detail.get("fields") or [detail.get("name", "")]
                parts.append(f"{verb} {', '.join(str(n) for n in names if n)}".strip())
        return "changed: " + "; ".join(parts)
    return "changed" if not message else f"changed: {message}"
