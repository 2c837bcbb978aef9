"""Reads on tenants and their keys."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from django.db import connection
from django.utils import timezone
from saas_platform.lib.model_rows import model_columns

from tenants import apikeys
from tenants.models import ApiKey, Tenant

# last_used_at is a hint for operators, not an audit log: write it at most once a minute per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyRefusal(Enum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class KeyCheck:
    api_key: ApiKey | None
    refusal: KeyRefusal | None


def apikey_authenticate(plaintext: str) -> KeyCheck:
    """The key's row (with its tenant) if the key is valid now, else why not.

    A malformed key (wrong shape or checksum) is refused without touching the database. Nothing
    is cached: a revocation takes effect on the very next request.
    """
    parsed = apikeys.key_parse(plaintext)
    if parsed is None:
        return KeyCheck(None, KeyRefusal.MALFORMED)
    api_key = _key_with_tenant(parsed.key_id)
    if api_key is None or not apikeys.key_matches(plaintext, api_key.key_hash):
        return KeyCheck(None, KeyRefusal.UNKNOWN)
    if apikeys.key_needs_rehash(api_key.key_hash):
        # A key from before the SHA-256 scheme: move it over while its plaintext is at hand.
        api_key.key_hash = apikeys.key_hash(plaintext)
        ApiKey.objects.filter(pk=api_key.pk).update(key_hash=api_key.key_hash)
    now = timezone.now()
    if api_key.revoked_at is not None:
        return KeyCheck(None, KeyRefusal.REVOKED)
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return KeyCheck(None, KeyRefusal.EXPIRED)
    if not api_key.tenant.is_active:
        return KeyCheck(None, KeyRefusal.SUSPENDED)
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional, so concurrent requests with one key write it once.
        ApiKey.objects.filter(pk=api_key.pk, last_used_at=api_key.last_used_at).update(
            last_used_at=now
        )
    return KeyCheck(api_key, None)


@functools.cache
def _key_lookup_sql() -> str:
    key, tenant = model_columns(ApiKey, "k"), model_columns(Tenant, "t")
    quote = connection.ops.quote_name
    tenant_fk = quote(ApiKey._meta.get_field("tenant").column)
    key_id = quote(ApiKey._meta.get_field("key_id").column)
    tenant_pk = quote(Tenant._meta.pk.column)
    # Names from the models' meta only; the key id is a bound parameter.
    return (
        f"SELECT {key.sql}, {tenant.sql} FROM {quote(ApiKey._meta.db_table)} k "  # noqa: S608
        f"JOIN {quote(Tenant._meta.db_table)} t ON t.{tenant_pk} = k.{tenant_fk} "
        f"WHERE k.{key_id} = %s"
    )


def _key_with_tenant(key_id: str) -> ApiKey | None:
    """The key with its tenant loaded, as `select_related("tenant")` would give it, from a
    statement composed once (saas_platform.lib.model_rows: this lookup runs on every request)."""
    with connection.cursor() as cursor:
        cursor.execute(_key_lookup_sql(), [key_id])
        row = cursor.fetchone()
    if row is None:
        return None
    key = model_columns(ApiKey, "k")
    api_key: ApiKey = key.instance(row[: len(key)])
    api_key.tenant = model_columns(Tenant, "t").instance(row[len(key) :])
    return api_key
