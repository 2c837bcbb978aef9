"""The apikey_create command and the key format (tenants.apikeys): shown once, stored as an HMAC."""

from __future__ import annotations

import hashlib
import hmac
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from tenants import apikeys
from tenants.models import ApiKey


@pytest.fixture
def created_keys(tenant_db):
    """Deletes the keys a test creates, so the actors keep only their own."""
    before = set(ApiKey.objects.values_list("pk", flat=True))
    yield
    connection.set_schema_to_public()
    ApiKey.objects.exclude(pk__in=before).delete()


def _create(slug: str, **options: str) -> list[str]:
    out = StringIO()
    call_command("apikey_create", slug, stdout=out, **options)
    return out.getvalue().splitlines()


def _all_api_key_rows_as_text() -> list[str]:
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(ApiKey._meta.db_table)
        cursor.execute(f"SELECT t::text FROM {table} AS t")  # noqa: S608 -- our own table name
        return [row[0] for row in cursor.fetchall()]


def test_it_prints_the_key_alone_on_the_last_line(created_keys, tenant_db):
    lines = _create("acme", name="ci")
    key = lines[-1]
    parsed = apikeys.key_parse(key)
    assert parsed is not None
    assert key == key.strip()
    assert len(key) == apikeys.KEY_LENGTH
    # The explanation comes before it, and names the key id, not the secret.
    assert len(lines) >= 2
    assert parsed.key_id in lines[0]
    assert all(key not in line for line in lines[:-1])


def test_it_stores_only_the_hash_of_the_key(created_keys, tenant_db):
    key = _create("acme", name="stored")[-1]
    parsed = apikeys.key_parse(key)
    row = ApiKey.objects.get(key_id=parsed.key_id)
    assert row.key_hash == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert key not in row.key_hash
    assert row.tenant_id == tenant_db.acme.pk
    assert row.name == "stored"


def test_the_plaintext_appears_nowhere_in_the_api_key_table(created_keys, tenant_db):
    key = _create("acme", name="secret")[-1]
    secret = key[len(apikeys.PREFIX) + apikeys.KEY_ID_LENGTH + 1 :]
    rows = _all_api_key_rows_as_text()
    assert any(apikeys.key_parse(key).key_id in row for row in rows)
    assert not any(key in row for row in rows)
    assert not any(secret[:16] in row for row in rows)


def test_it_grants_every_scope_by_default(created_keys, tenant_db):
    key = _create("acme")[-1]
    row = ApiKey.objects.get(key_id=apikeys.key_parse(key).key_id)
    assert sorted(row.scopes) == sorted(ApiKey.SCOPES)


def test_it_grants_only_the_scopes_given(created_keys, tenant_db):
    key = _create("acme", scopes="jobs:read, schedules:read")[-1]
    row = ApiKey.objects.get(key_id=apikeys.key_parse(key).key_id)
    assert row.scopes == ["jobs:read", "schedules:read"]


def test_it_creates_the_key_for_the_tenant_named(created_keys, tenant_db):
    key = _create("globex")[-1]
    row = ApiKey.objects.get(key_id=apikeys.key_parse(key).key_id)
    assert row.tenant_id == tenant_db.globex.pk


@pytest.mark.parametrize("scopes", ["jobs:read,jobs:delete", "admin", ",", "JOBS:READ"])
def test_it_refuses_unknown_or_no_scopes_and_creates_no_key(created_keys, tenant_db, scopes):
    before = ApiKey.objects.count()
    with pytest.raises(CommandError, match="Scopes must be some of"):
        _create("acme", scopes=scopes)
    assert ApiKey.objects.count() == before


@pytest.mark.parametrize("slug", ["nobody", "ACME", "tenant_template", "public"])
def test_it_refuses_an_unknown_tenant(created_keys, tenant_db, slug):
    before = ApiKey.objects.count()
    with pytest.raises(CommandError, match="No tenant"):
        _create(slug)
    assert ApiKey.objects.count() == before


# --- the key format -------------------------------------------------------------------------


def _with_checksum(body: str) -> str:
    return body + apikeys._checksum(body)


def test_generated_keys_parse_back_to_their_id():
    for _ in range(50):
        generated = apikeys.key_generate()
        parsed = apikeys.key_parse(generated.plaintext)
        assert parsed == generated
        assert generated.plaintext.startswith(f"{apikeys.PREFIX}{generated.key_id}_")


def test_generated_keys_are_all_different():
    keys = {apikeys.key_generate().plaintext for _ in range(200)}
    ids = {apikeys.key_parse(k).key_id for k in keys}
    assert len(keys) == len(ids) == 200


@pytest.mark.parametrize(
    "garbage", ["", "hello", "tjp_", "Bearer tjp_x", " " * apikeys.KEY_LENGTH, "é" * 53]
)
def test_key_parse_rejects_garbage(garbage):
    assert apikeys.key_parse(garbage) is None


def test_key_parse_rejects_any_single_changed_character():
    key = apikeys.key_generate().plaintext
    for position in range(len(key)):
        replacement = "b" if key[position] != "b" else "c"
        flipped = key[:position] + replacement + key[position + 1 :]
        assert apikeys.key_parse(flipped) is None, position


def test_key_parse_rejects_a_wrong_prefix_even_with_a_valid_checksum():
    key = apikeys.key_generate().plaintext
    body = "tjq_" + key[len(apikeys.PREFIX) : -apikeys.CHECKSUM_LENGTH]
    assert apikeys.key_parse(_with_checksum(body)) is None


@pytest.mark.parametrize("change", [lambda k: k[:-1], lambda k: k + "a", lambda k: k + k])
def test_key_parse_rejects_a_wrong_length(change):
    assert apikeys.key_parse(change(apikeys.key_generate().plaintext)) is None


def test_key_parse_rejects_a_key_id_outside_its_alphabet_even_with_a_valid_checksum():
    secret = "A" * apikeys.SECRET_LENGTH
    assert apikeys.key_parse(_with_checksum(f"tjp_abcdefghij_{secret}")) is not None
    for bad_id in ("ABCDEFGHIJ", "abcdefghi1", "abcdefghi8", "abcdefgh-_"):
        assert apikeys.key_parse(_with_checksum(f"tjp_{bad_id}_{secret}")) is None, bad_id


def test_key_parse_rejects_a_missing_separator_even_with_a_valid_checksum():
    secret = "A" * apikeys.SECRET_LENGTH
    assert apikeys.key_parse(_with_checksum(f"tjp_abcdefghij-{secret}")) is None


def test_key_matches_compares_the_sha256_of_the_key():
    key = apikeys.key_generate().plaintext
    stored = apikeys.key_hash(key)
    assert stored == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert apikeys.key_matches(key, stored)
    assert not apikeys.key_matches(apikeys.key_generate().plaintext, stored)
    assert not apikeys.key_needs_rehash(stored)


def test_a_key_hash_does_not_depend_on_the_server_secret():
    key = apikeys.key_generate().plaintext
    stored = apikeys.key_hash(key)
    with override_settings(SECRET_KEY="another-server-secret", SECRET_KEY_FALLBACKS=[]):
        assert apikeys.key_hash(key) == stored
        assert apikeys.key_matches(key, stored)


def _legacy_hash(key: str, secret: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def test_a_legacy_hmac_matches_under_the_secret_or_a_fallback_only():
    key = apikeys.key_generate().plaintext
    stored = _legacy_hash(key, "old-secret")
    assert apikeys.key_needs_rehash(stored)
    with override_settings(SECRET_KEY="old-secret", SECRET_KEY_FALLBACKS=[]):
        assert apikeys.key_matches(key, stored)
    with override_settings(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["old-secret"]):
        assert apikeys.key_matches(key, stored)
    with override_settings(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=[]):
        assert not apikeys.key_matches(key, stored)
    assert not apikeys.key_matches(apikeys.key_generate().plaintext, stored)
