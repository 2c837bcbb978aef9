"""Authentication with tenant API keys: who gets in, who doesn't, and what is never stored."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tenants import apikeys
from tenants.models import ApiKey
from tenants.services import apikey_create, apikey_revoke, tenant_set_active
from tests.api_client import call


def test_it_refuses_a_request_without_a_key(tenant_db):
    answer = call("GET", "/jobs", key=None)
    assert (answer.status, answer.error_code) == (401, "unauthenticated")


def test_it_refuses_a_non_bearer_scheme(tenant_db):
    answer = call(
        "GET", "/jobs", key=None, headers={"Authorization": f"Token {tenant_db.acme_key}"}
    )
    assert answer.status == 401


@pytest.mark.parametrize(
    "garbage",
    ["nope", "tjp_", "x" * 53, "tjp_abcdefghij_" + "A" * 38, "Bearer", "tjp_" + "\u00e9" * 49],
)
def test_it_refuses_a_malformed_key_without_touching_the_database(tenant_db, garbage):
    with CaptureQueriesContext(connection) as queries:
        answer = call("GET", "/jobs", key=garbage, host="localhost")
    assert (answer.status, answer.error_code) == (401, "invalid_api_key")
    assert len(queries.captured_queries) == 0


def test_a_key_with_a_flipped_character_is_refused_by_its_checksum(tenant_db):
    key = tenant_db.acme_key
    flipped = key[:20] + ("a" if key[20] != "a" else "b") + key[21:]
    assert apikeys.key_parse(flipped) is None
    assert call("GET", "/jobs", key=flipped).status == 401


def test_an_unknown_but_well_formed_key_is_refused(tenant_db):
    stranger = apikeys.key_generate().plaintext
    assert call("GET", "/jobs", key=stranger).status == 401


def test_a_revoked_key_fails_on_the_very_next_request(tenant_db):
    created = apikey_create(tenant=tenant_db.acme, name="to revoke")
    assert call("GET", "/jobs", key=created.plaintext).status == 200
    apikey_revoke(api_key=created.api_key)
    answer = call("GET", "/jobs", key=created.plaintext)
    assert (answer.status, answer.error_code) == (401, "revoked_api_key")


def test_an_expired_key_is_refused(tenant_db):
    created = apikey_create(
        tenant=tenant_db.acme, name="short", expires_at=timezone.now() + timedelta(seconds=60)
    )
    ApiKey.objects.filter(pk=created.api_key.pk).update(expires_at=timezone.now())
    answer = call("GET", "/jobs", key=created.plaintext)
    assert (answer.status, answer.error_code) == (401, "expired_api_key")


def test_a_suspended_tenants_key_is_refused(tenant_db):
    created = apikey_create(tenant=tenant_db.initech, name="suspended")
    tenant_set_active(tenant=tenant_db.initech, active=False)
    try:
        answer = call("GET", "/jobs", key=created.plaintext)
    finally:
        tenant_set_active(tenant=tenant_db.initech, active=True)
    assert (answer.status, answer.error_code) == (403, "tenant_suspended")


def test_a_key_used_on_another_tenants_host_is_refused(tenant_db):
    answer = call("GET", "/jobs", key=tenant_db.acme_key, host="globex.localhost")
    assert (answer.status, answer.error_code) == (401, "wrong_host")


def test_a_key_works_on_its_own_host_and_on_the_public_host(tenant_db):
    assert call("GET", "/jobs", key=tenant_db.acme_key, host="acme.localhost").status == 200
    assert call("GET", "/jobs", key=tenant_db.acme_key, host="localhost").status == 200


def test_an_unknown_host_is_a_404(tenant_db):
    assert call("GET", "/jobs", key=tenant_db.acme_key, host="nobody.localhost").status == 404


def test_a_key_without_the_scope_is_refused_with_403(tenant_db):
    read_only = apikey_create(tenant=tenant_db.acme, name="ro", scopes=["jobs:read"]).plaintext
    assert call("GET", "/jobs", key=read_only).status == 200
    answer = call(
        "POST", "/jobs", key=read_only, body={"type": "demo.add", "args": {"x": 1, "y": 1}}
    )
    assert (answer.status, answer.error_code) == (403, "insufficient_scope")


def test_last_used_at_is_written_at_most_once_a_minute(tenant_db):
    created = apikey_create(tenant=tenant_db.acme, name="usage")
    call("GET", "/jobs", key=created.plaintext)
    first = ApiKey.objects.get(pk=created.api_key.pk).last_used_at
    assert first is not None
    call("GET", "/jobs", key=created.plaintext)
    assert ApiKey.objects.get(pk=created.api_key.pk).last_used_at == first
    ApiKey.objects.filter(pk=created.api_key.pk).update(last_used_at=first - timedelta(minutes=2))
    call("GET", "/jobs", key=created.plaintext)
    assert ApiKey.objects.get(pk=created.api_key.pk).last_used_at > first - timedelta(minutes=2)


def test_the_plaintext_key_is_stored_nowhere_and_logged_nowhere(tenant_db, caplog):
    caplog.set_level(logging.DEBUG)
    created = apikey_create(tenant=tenant_db.acme, name="secret")
    call("GET", "/jobs", key=created.plaintext)
    call("GET", "/jobs", key=created.plaintext[:-1] + "x")  # refused; must not be logged either
    call("POST", "/jobs", key=created.plaintext, body={"type": "nope"})
    secret = created.plaintext[len(apikeys.PREFIX) + apikeys.KEY_ID_LENGTH + 1 :]
    assert secret not in caplog.text
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_jsonb(k)::text FROM public.tenants_apikey k")
        dump = " ".join(row[0] for row in cursor.fetchall())
    assert created.api_key.key_id in dump
    assert secret not in dump


# --- rotating SECRET_KEY -----------------------------------------------------------------------


def test_keys_keep_working_after_the_server_secret_is_rotated(tenant_db):
    created = apikey_create(tenant=tenant_db.acme, name="before rotation")
    with override_settings(SECRET_KEY="a-brand-new-secret", SECRET_KEY_FALLBACKS=[]):
        assert call("GET", "/jobs", key=created.plaintext).status == 200
        apikey_revoke(api_key=created.api_key)
        answer = call("GET", "/jobs", key=created.plaintext)
    assert (answer.status, answer.error_code) == (401, "revoked_api_key")


def test_a_key_hashed_under_the_old_scheme_works_through_the_fallbacks_and_is_rehashed(tenant_db):
    created = apikey_create(tenant=tenant_db.acme, name="legacy")
    old_secret = settings.SECRET_KEY
    legacy = hmac.new(old_secret.encode(), created.plaintext.encode(), hashlib.sha256).hexdigest()
    ApiKey.objects.filter(pk=created.api_key.pk).update(key_hash=legacy)
    with override_settings(SECRET_KEY="rotated-secret", SECRET_KEY_FALLBACKS=[]):
        # Rotated without keeping the old secret: the old-scheme key cannot be verified.
        assert call("GET", "/jobs", key=created.plaintext).status == 401
    with override_settings(SECRET_KEY="rotated-secret", SECRET_KEY_FALLBACKS=[old_secret]):
        assert call("GET", "/jobs", key=created.plaintext).status == 200
    stored = ApiKey.objects.get(pk=created.api_key.pk).key_hash
    assert stored == apikeys.key_hash(created.plaintext)
    with override_settings(SECRET_KEY="rotated-again", SECRET_KEY_FALLBACKS=[]):
        # Rehashed on that use: no secret is needed any more.
        assert call("GET", "/jobs", key=created.plaintext).status == 200


def test_the_key_lookup_builds_the_instances_the_orm_builds(tenant_db):
    # The lookup runs on every request from a statement composed once (tenants.selectors):
    # every field of the key and of its tenant, the JSON scopes and the times included, must
    # come out as select_related would give them, or scopes and suspension would be misread.
    from tenants.models import Tenant
    from tenants.selectors import _key_with_tenant

    created = apikey_create(tenant=tenant_db.acme, name="compare", scopes=["jobs:read"])
    ApiKey.objects.filter(pk=created.api_key.pk).update(
        expires_at=timezone.now() + timedelta(days=3), last_used_at=timezone.now()
    )
    orm = ApiKey.objects.select_related("tenant").get(pk=created.api_key.pk)
    built = _key_with_tenant(orm.key_id)
    assert built is not None
    for field in ApiKey._meta.concrete_fields:
        assert getattr(built, field.attname) == getattr(orm, field.attname), field.name
    assert built.scopes == ["jobs:read"]
    assert built.expires_at is not None
    assert built.expires_at.tzinfo is not None
    assert ApiKey._meta.get_field("tenant").is_cached(built)  # no query to reach the tenant
    assert isinstance(built.tenant, Tenant)
    for field in Tenant._meta.concrete_fields:
        assert getattr(built.tenant, field.attname) == getattr(orm.tenant, field.attname), field
    assert not built._state.adding
    assert built.tenant._state.db == orm.tenant._state.db
    assert _key_with_tenant("nosuchkeyid00000") is None
