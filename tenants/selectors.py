"""Reads on tenants and their keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from django.utils import timezone

from tenants import apikeys
from tenants.models import ApiKey

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
    api_key = ApiKey.objects.select_related("tenant").filter(key_id=parsed.key_id).first()
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
