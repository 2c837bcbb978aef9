"""Tenant users: Django auth users inside the active tenant's schema, signing in by email."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
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
