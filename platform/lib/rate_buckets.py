"""Token buckets in Redis, shared by every process and host: cluster-wide rate limits.

A bucket holds up to `burst` tokens and refills at `rate` tokens per second; taking n jobs' worth
takes n tokens, or as many as there are. One Lua script takes from several buckets in one round
trip, atomically, on Redis's own clock (`TIME`), so hosts whose clocks disagree still share one
limit. (The `limits` package has fixed and sliding windows, not a token bucket with a burst,
and its windows let twice the rate through across a window's edge.)

All or none (`all_or_none=True`, for a request that must be admitted whole, such as a batch):
a bucket gives all of `wanted` or nothing. Asking for more than the bucket can ever hold is
granted once it is full, and leaves it in debt (negative tokens) that later takes wait out, so a
request larger than the burst is possible at all and the long-run rate still holds.

State per bucket: a hash {tokens, at}, expiring once it would be full again anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saas_platform.lib.state_redis import state_redis

# KEYS: the buckets, then the cap's hash if there is one. ARGV: the mode ('1': all or none); the
# cap: '1' if there is one, its field, limit and amount; then rate, burst, wanted for each bucket
# in turn. Returns {-1, the counter's value} if the cap refused (nothing taken), else, per bucket,
# {granted, microseconds until the next token (0 if one is left), microseconds until all of
# wanted (at most burst) is there (0 if it was granted)}. Lua numbers are doubles; the reply
# converts them to integers, hence microseconds.
_TAKE = """
local buckets = #KEYS
if ARGV[2] == '1' then
  buckets = buckets - 1
  local used = tonumber(redis.call('HGET', KEYS[#KEYS], ARGV[3]) or 0)
  if used + tonumber(ARGV[5]) > tonumber(ARGV[4]) then
    return {-1, used}
  end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local all_or_none = ARGV[1] == '1'
local out = {}
for i = 1, buckets do
  local key = KEYS[i]
  local rate = tonumber(ARGV[i * 3 + 3])
  local burst = tonumber(ARGV[i * 3 + 4])
  local wanted = tonumber(ARGV[i * 3 + 5])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then
    tokens = burst
    at = now
  end
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  local needed = math.min(wanted, burst)
  local granted = 0
  if all_or_none then
    if tokens >= needed then
      granted = wanted
    end
  else
    -- Never below 0: a bucket in debt gives nothing (and takes nothing back).
    granted = math.max(0, math.min(wanted, math.floor(tokens)))
  end
  tokens = tokens - granted
  local wait = 0
  if tokens < 1 then
    wait = (1 - tokens) / rate
  end
  local ready = 0
  if granted < wanted then
    ready = math.max(0, needed - tokens) / rate
  end
  if granted > 0 or state[1] == false then
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
    -- Until it is full again (debt included), plus a second: an expired bucket is a full one.
    redis.call('PEXPIRE', key, math.ceil(((burst - tokens) / rate + 1) * 1000))
  end
  out[i] = {granted, math.ceil(wait * 1000000), math.ceil(ready * 1000000)}
end
return out
"""
_script: Any = None


@dataclass(frozen=True)
class BucketSpec:
    key: str
    rate: float  # tokens per second
    burst: int  # the most tokens the bucket holds


@dataclass(frozen=True)
class Take:
    granted: int
    next_token_in: float  # seconds until a token is there (0: one is left now)
    # Seconds until the bucket holds all that was wanted (at most its burst): when asking the same
    # again would get it all. 0 when it was all granted.
    ready_in: float = 0.0


@dataclass(frozen=True)
class CounterCap:
    """A counter a take must not push past its limit: `amount` more on the hash field `key` /
    `field` must stay at most `limit`, or nothing is taken. Checked in the same atomic step as
    the buckets, so a caller that checks a counter before it takes (the monthly job quota before
    the submit rate) needs one round trip, not two. Only checked: the counting is the caller's."""

    key: str
    field: str
    limit: int
    amount: int


class CapReached(Exception):
    """The take's CounterCap refused it; no bucket gave anything. `used`: the counter's value."""

    def __init__(self, cap: CounterCap, used: int) -> None:
        super().__init__(f"{cap.key} {cap.field}: {used} + {cap.amount} > {cap.limit}")
        self.cap = cap
        self.used = used


def buckets_take(
    specs: Sequence[tuple[BucketSpec, int]],
    *,
    all_or_none: bool = False,
    cap: CounterCap | None = None,
) -> list[Take]:
    """Take up to `wanted` tokens from each bucket; returns what each gave, in order.

    With `all_or_none`, each bucket gives all of its `wanted` or nothing (buckets are decided
    one by one, in the same atomic step). With `cap`, raises CapReached, taking nothing, if the
    cap's counter would pass its limit.
    """
    global _script
    if not specs:
        return []
    if _script is None:
        _script = state_redis().register_script(_TAKE)
    keys = [spec.key for spec, _ in specs]
    args: list[float | int | str] = [1 if all_or_none else 0]
    if cap is None:
        args += [0, "", 0, 0]
    else:
        keys.append(cap.key)
        args += [1, cap.field, cap.limit, cap.amount]
    for spec, wanted in specs:
        if not spec.rate > 0:
            raise ValueError(f"bucket {spec.key}: rate must be above 0, not {spec.rate}")
        args += [spec.rate, max(1, spec.burst), max(0, wanted)]
    replies = _script(keys=keys, args=args)
    if cap is not None and replies and not isinstance(replies[0], list):
        raise CapReached(cap, int(replies[1]))
    return [
        Take(granted=int(granted), next_token_in=int(wait) / 1e6, ready_in=int(ready) / 1e6)
        for granted, wait, ready in replies
    ]


def bucket_take(
    spec: BucketSpec,
    wanted: int = 1,
    *,
    all_or_none: bool = False,
    cap: CounterCap | None = None,
) -> Take:
    return buckets_take([(spec, wanted)], all_or_none=all_or_none, cap=cap)[0]


def bucket_peek(spec: BucketSpec) -> Take:
    """How long until the bucket has a token, taking nothing."""
    return bucket_take(spec, 0)
