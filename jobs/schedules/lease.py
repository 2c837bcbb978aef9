"""One active beat at a time: a lease in the state Redis, renewed by its holder every tick.

A standby tries to take it every STANDBY_POLL_SECONDS; a holder that dies (SIGKILL included)
stops renewing, so the lease expires after TTL_SECONDS and a standby takes over within
TTL_SECONDS + STANDBY_POLL_SECONDS (6 s). A holder that cannot reach Redis stops dispatching once
its lease may have expired. The lease is not what makes an occurrence run once (two beats can
overlap at its edge): the occurrence key in the tenant's schema is (jobs.schedules.occurrences).
"""

from __future__ import annotations

import logging
import time
import uuid

import redis
from saas_platform.lib.state_redis import state_key, state_redis

logger = logging.getLogger(__name__)

TTL_SECONDS = 5.0
STANDBY_POLL_SECONDS = 1.0

# Renew or release only our own lease (compare the token, then act, atomically).
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end"
)


class Lease:
    def __init__(self, name: str = "beat", ttl_seconds: float = TTL_SECONDS) -> None:
        self.key = state_key(name, "lease")
        self.token = uuid.uuid4().hex
        self.ttl_ms = int(ttl_seconds * 1000)
        self.held = False
        # Until when, by our own clock, the lease is surely ours (renewed before that).
        self._safe_until = 0.0
        self.acquired_now = False

    def hold(self) -> bool:
        """Take or renew the lease; whether this process holds it now."""
        began = time.monotonic()
        try:
            client = state_redis()
            if self.held:
                ok = bool(client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
            else:
                ok = bool(client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except redis.RedisError as exc:
            logger.warning("beat lease not renewed: %s", exc)
            self.acquired_now = False
            # Keep dispatching only while the lease cannot have expired yet.
            self.held = self.held and time.monotonic() < self._safe_until
            return self.held
        self.acquired_now = ok and not self.held
        if self.held and not ok:
            logger.warning("beat lease lost: another beat holds it; standing by")
        self.held = ok
        if ok:
            self._safe_until = began + self.ttl_ms / 1000 * 0.8
        return ok

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            state_redis().eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:
            logger.warning("beat lease not released (it expires on its own): %s", exc)
