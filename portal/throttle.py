"""Sign-in throttling: failed attempts counted per account and per address, per tenant.

Counters live in the cache (Redis), shared by every web process, each expiring a window after
its first failure. Both limits are checked before the password is: once either is reached, even
the right password is refused until the window ends, so guessing gains nothing from speed.
A success clears the account's counter (not the address's: one right password must not buy an
address another round of guesses at other accounts).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoginKeys:
    account: str
    address: str


def login_keys(*, tenant_id: int, email: str, address: str) -> LoginKeys:
    # Hashed: the cache holds no email addresses, and any input makes a valid key.
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return LoginKeys(
        account=f"portal:login:account:{tenant_id}:{account}",
        address=f"portal:login:address:{tenant_id}:{address}",
    )


def login_blocked(keys: LoginKeys) -> bool:
    try:
        counts = cache.get_many([keys.account, keys.address])
    except RedisError as exc:
        # Without Redis nobody could sign in at all; a short outage is not worth that.
        logger.warning("login throttle unavailable, not limiting: %s", exc)
        return False
    return bool(
        counts.get(keys.account, 0) >= settings.PORTAL_LOGIN_FAILURES_PER_ACCOUNT
        or counts.get(keys.address, 0) >= settings.PORTAL_LOGIN_FAILURES_PER_ADDRESS
    )


def login_failed(keys: LoginKeys) -> None:
    window = settings.PORTAL_LOGIN_WINDOW_SECONDS
    try:
        for key in (keys.account, keys.address):
            # add() sets the window only for the first failure; incr() keeps its expiry.
            if not cache.add(key, 1, timeout=window):
                cache.incr(key)
    except (RedisError, ValueError) as exc:  # ValueError: the key expired between add and incr
        logger.warning("could not count a failed login: %s", exc)


def login_succeeded(keys: LoginKeys) -> None:
    try:
        cache.delete(keys.account)
    except RedisError as exc:
        logger.warning("could not clear a login counter: %s", exc)
