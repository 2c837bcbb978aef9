"""Tenant users: Django auth users inside the active tenant's schema, signing in by email."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from saas_platform.lib.db import connection


def tenant_user_create(*, email: str, password: str | None, is_admin: bool = False) -> AbstractUser:
    """Create a user in the active tenant's schema. The email is also the username."""
    if connection.schema_name == "public":
        raise RuntimeError("tenant users are created with a tenant active")
    validate_email(email)
    user_model = get_user_model()
    normalized = email.strip().lower()
    if user_model.objects.filter(username=normalized).exists():
        raise ValidationError(f"A user with email {normalized!r} already exists.")
    user = user_model.objects.create_user(username=normalized, email=normalized, password=password)
    user.is_staff = is_admin  # tenant admin inside this tenant's portal; no operator rights
    user.save(update_fields=["is_staff"])
    return user


class LastAdminError(ValidationError):
    """The change would leave the tenant without an admin, who alone can undo it."""


def _other_admins(user: AbstractUser) -> bool:
    # The admins' rows are locked: two admins demoting each other at once cannot both succeed.
    admins = get_user_model().objects.select_for_update().filter(is_staff=True, is_active=True)
    return any(admin.pk != user.pk for admin in admins)


@transaction.atomic
def tenant_user_set_role(*, user: AbstractUser, is_admin: bool) -> AbstractUser:
    """Make a tenant user an admin or a member; the last admin stays one."""
    if not is_admin and user.is_staff and not _other_admins(user):
        raise LastAdminError("The tenant's last admin cannot become a member.")
    user.is_staff = is_admin
    user.save(update_fields=["is_staff"])
    return user


@transaction.atomic
def tenant_user_remove(*, user: AbstractUser) -> None:
    """Delete a tenant user; the last admin stays. Their sessions go with them: a session whose
    user is gone is anonymous at its next request."""
    if user.is_staff and not _other_admins(user):
        raise LastAdminError("The tenant's last admin cannot be removed.")
    user.delete()
