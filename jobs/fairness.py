"""Which tenant's jobs go to the broker next: start-time fair queueing over tenants, per queue.

State in the state Redis, per broker queue (the seed's `default` / `heavy` split), keyed by the
platform's tenant id, never by anything a client sends:
- `ready`: the tenants with jobs that may go now, each scored by its *start tag*;
- `tags`: each tenant's finish tag after its last turn;
- `later`: tenants to look at again at a time (a rate limit's next token, a concurrency slot
  re-check, a scheduled job's run_at);
- one `wake` list for all queues, which a submission pokes so the dispatcher need not poll.

Start-time fair queueing: the dispatcher serves the ready tenant with the smallest start tag; a
turn of n jobs moves that tenant's tag on by n / weight (its plan's fairness weight), so over time
each backlogged tenant gets a share of dispatches proportional to its weight, whatever it
submitted. A tenant that becomes ready starts at max(its last finish tag, the virtual time: the
tag of the last tenant served), so idling earns no credit to flood with later. It is
work-conserving (a lone ready tenant is served without pause) and costs O(log tenants with
waiting work) per turn: idle tenants are in no structure at all.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis
from saas_platform.lib.state_redis import state_key, state_redis

logger = logging.getLogger(__name__)

WAKE_LIST_MAX = 100

# KEYS: ready, tags, vtime, later, queues, wake. ARGV: tenant id, queue, due (epoch; 0: now).
# Atomic, so that a tenant never enters `ready` with a stale tag while the dispatcher reads it.
_MARK_READY = """
local tenant, queue, due = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('SADD', KEYS[5], queue)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if due > now then
  -- LT keeps the earliest time (and adds the tenant if it is not there).
  redis.call('ZADD', KEYS[4], 'LT', due, tenant)
else
  if redis.call('ZSCORE', KEYS[1], tenant) == false then
    local vtime = tonumber(redis.call('GET', KEYS[3]) or '0')
    local last = tonumber(redis.call('HGET', KEYS[2], tenant) or '0')
    redis.call('ZADD', KEYS[1], math.max(vtime, last), tenant)
  end
end
redis.call('LPUSH', KEYS[6], '1')
redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[4]))
return 1
"""

_script = None


def _keys(queue: str) -> list[str]:
    return [
        state_key("fair", queue, "ready"),
        state_key("fair", queue, "tags"),
        state_key("fair", queue, "vtime"),
        state_key("fair", queue, "later"),
        state_key("fair", "queues"),
        state_key("fair", "wake"),
    ]


def tenant_mark_ready(
    tenant_id: int, queue: str, *, due: float = 0.0, pipe: redis.client.Pipeline | None = None
) -> None:
    """The tenant has jobs for `queue` that may go at `due` (epoch seconds; 0: now). With `pipe`,
    joins the caller's pipeline."""
    args: list[str | int | float] = [tenant_id, queue, due, WAKE_LIST_MAX - 1]
    if pipe is not None:
        # EVAL with the script's text, not a registered script: a pipeline holding one first
        # asks Redis whether it knows it (SCRIPT EXISTS), a round trip of its own on every
        # submission's and every beat tenant's announcement. Redis keeps the compiled script by
        # its hash either way.
        pipe.eval(_MARK_READY, 6, *_keys(queue), *args)
        return
    global _script
    if _script is None:
        _script = state_redis().register_script(_MARK_READY)
    _script(keys=_keys(queue), args=args)


@dataclass(frozen=True)
class Pick:
    tenant_id: int
    tag: float
    alone: bool  # the only ready tenant of its queue: no one to be fair to


def queues_known() -> set[str]:
    members: set[bytes] = state_redis().smembers(state_key("fair", "queues"))  # type: ignore[assignment]
    return {member.decode() for member in members}


def promote_due(queue: str, *, now: float | None = None) -> int:
    """Tenants whose `later` time has come become ready again."""
    now = time.time() if now is None else now
    later = _keys(queue)[3]
    due: list[bytes] = state_redis().zrangebyscore(later, "-inf", now)  # type: ignore[assignment]
    for member in due:
        if state_redis().zrem(later, member):
            tenant_mark_ready(int(member), queue)
    return len(due)


def next_later(queues: set[str]) -> float | None:
    """The earliest `later` time over the queues, epoch seconds."""
    pipe = state_redis().pipeline(transaction=False)
    for queue in sorted(queues):
        pipe.zrange(_keys(queue)[3], 0, 0, withscores=True)
    times = [rows[0][1] for rows in pipe.execute() if rows]
    return min(times) if times else None


def pick(queue: str) -> Pick | None:
    ready = _keys(queue)[0]
    pipe = state_redis().pipeline(transaction=False)
    pipe.zrange(ready, 0, 0, withscores=True)
    pipe.zcard(ready)
    first, count = pipe.execute()
    if not first:
        return None
    member, tag = first[0]
    return Pick(tenant_id=int(member), tag=float(tag), alone=int(count) == 1)


def served(chosen: Pick, queue: str, *, dispatched: int, weight: float, more: bool) -> None:
    """Move the tenant's tag on by its turn's share; it stays ready if it has `more`."""
    ready, tags, vtime, _, _, _ = _keys(queue)
    finish = chosen.tag + dispatched / weight
    pipe = state_redis().pipeline(transaction=False)
    pipe.set(vtime, str(chosen.tag))
    pipe.hset(tags, str(chosen.tenant_id), str(finish))
    if more:
        pipe.zadd(ready, {str(chosen.tenant_id): finish}, xx=True)
    else:
        pipe.zrem(ready, str(chosen.tenant_id))
    pipe.execute()


def set_aside(tenant_id: int, queue: str, *, until: float) -> None:
    """Out of `ready` until `until` (a rate limit's next token, a concurrency re-check)."""
    ready, _, _, later, _, _ = _keys(queue)
    pipe = state_redis().pipeline(transaction=False)
    pipe.zrem(ready, str(tenant_id))
    pipe.zadd(later, {str(tenant_id): until}, lt=True)
    pipe.execute()


def wait_for_wake(timeout: float) -> bool:
    """Block until a submission pokes (True) or `timeout` seconds pass (False)."""
    if timeout <= 0:
        return False
    client = state_redis()
    wake = state_key("fair", "wake")
    # BLPOP takes whole or fractional seconds (Redis 6+); drain the rest so one poke is one wake.
    got = client.blpop([wake], timeout=max(0.01, timeout))
    if got:
        client.delete(wake)
    return bool(got)


@dataclass(frozen=True)
class QueueWaiting:
    queue: str
    ready: int  # tenants with jobs that may go now, waiting their turn
    set_aside: int  # tenants whose next job waits for a time: scheduled, rate limit, cap


def waiting_overview() -> list[QueueWaiting]:
    """Per queue, how many tenants wait and why, from the dispatcher's Redis state (two ZCARDs
    a queue, never a tenant schema): the operator's health view."""
    queues = sorted(queues_known())
    pipe = state_redis().pipeline(transaction=False)
    for queue in queues:
        keys = _keys(queue)
        pipe.zcard(keys[0])
        pipe.zcard(keys[3])
    counts = pipe.execute()
    return [
        QueueWaiting(queue=queue, ready=int(counts[2 * n]), set_aside=int(counts[2 * n + 1]))
        for n, queue in enumerate(queues)
    ]
