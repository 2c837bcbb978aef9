"""The API key format: recognisable, checksummed, and stored only as a keyed hash.

A key reads `tjp_<key id>_<secret><checksum>`:
- `tjp_` makes a leaked key easy to recognise (and to scan for in code and logs);
- the key id (10 base32 characters) is the public part used to find the row;
- the secret is 32 base62 characters (about 190 bits of randomness);
- the checksum (6 base62 characters of a CRC32) lets garbage be refused without a database query.
The database keeps `sha256:<hex digest of the key>`, compared in constant time. A plain hash is
enough, as at the large API providers: with 190 random bits a leaked hash cannot be brute-forced,
and no server secret is involved, so rotating SECRET_KEY never revokes a key. Keys issued before
this scheme are stored as HMAC-SHA256(SECRET_KEY, key) (a bare hex digest); they are checked
against SECRET_KEY and every SECRET_KEY_FALLBACKS entry and rehashed on their next use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

from django.conf import settings

PREFIX = "tjp_"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_SECRET_ALPHABET = string.digits + string.ascii_letters
KEY_ID_LENGTH = 10
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    plaintext: str


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode())
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, remainder = divmod(value, 62)
        digits.append(_SECRET_ALPHABET[remainder])
    return "".join(digits)


def key_generate() -> ParsedKey:
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    body = f"{PREFIX}{key_id}_{secret}"
    return ParsedKey(key_id=key_id, plaintext=body + _checksum(body))


def key_parse(plaintext: str) -> ParsedKey | None:
    """The key's parts, or None for anything that is not a well-formed key (no database)."""
    if len(plaintext) != KEY_LENGTH or not plaintext.startswith(PREFIX):
        return None
    body, checksum = plaintext[:-CHECKSUM_LENGTH], plaintext[-CHECKSUM_LENGTH:]
    key_id = body[len(PREFIX) : len(PREFIX) + KEY_ID_LENGTH]
    if body[len(PREFIX) + KEY_ID_LENGTH] != "_" or any(c not in _ID_ALPHABET for c in key_id):
        return None
    if not hmac.compare_digest(_checksum(body), checksum):
        return None
    return ParsedKey(key_id=key_id, plaintext=plaintext)


HASH_SCHEME = "sha256:"


def key_hash(plaintext: str) -> str:
    return HASH_SCHEME + hashlib.sha256(plaintext.encode()).hexdigest()


def _legacy_hmacs(plaintext: str) -> list[str]:
    secrets_ = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [
        hmac.new(
            secret.encode() if isinstance(secret, str) else secret,
            plaintext.encode(),
            hashlib.sha256,
        ).hexdigest()
        for secret in secrets_
    ]


def key_matches(plaintext: str, stored_hash: str) -> bool:
    if stored_hash.startswith(HASH_SCHEME):
        return hmac.compare_digest(key_hash(plaintext), stored_hash)
    # Every candidate is compared, so the time taken does not say which secret matched.
    matches = [
        hmac.compare_digest(candidate, stored_hash) for candidate in _legacy_hmacs(plaintext)
    ]
    return any(matches)


def key_needs_rehash(stored_hash: str) -> bool:
    return not stored_hash.startswith(HASH_SCHEME)
