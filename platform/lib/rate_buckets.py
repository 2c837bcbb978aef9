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

# KEYS: the buckets. ARGV: the mode ('1': all or none), then rate, burst, wanted for each bucket
# in turn. Returns, per bucket, {granted, microseconds until the next token (0 if one is left),
# microseconds until all of wanted (at most burst) is there (0 if it was granted)}. Lua numbers
# are doubles; the reply converts them to integers, hence microseconds.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local all_or_none = ARGV[1] == '1'
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[i * 3 - 1])
  local burst = tonumber(ARGV[i * 3])
  local wanted = tonumber(ARGV[i * 3 + 1])
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


def buckets_take(
    specs: Sequence[tuple[BucketSpec, int]], *, all_or_none: bool = False
) -> list[Take]:
    """Take up to `wanted` tokens from each bucket; returns what each gave, in order.

    With `all_or_none`, each bucket gives all of its `wanted` or nothing (buckets are decided
    one by one, in the same atomic step).
    """
    global _script
    if not specs:
        return []
    if _script is None:
        _script = state_redis().register_script(_TAKE)
    args: list[float | int] = [1 if all_or_none else 0]
    for spec, wanted in specs:
        if not spec.rate > 0:
            raise ValueError(f"bucket {spec.key}: rate must be above 0, not {spec.rate}")
        args += [spec.rate, max(1, spec.burst), max(0, wanted)]
    replies = _script(keys=[spec.key for spec, _ in specs], args=args)
    return [
        Take(granted=int(granted), next_token_in=int(wait) / 1e6, ready_in=int(ready) / 1e6)
        for granted, wait, ready in replies
    ]


def bucket_take(spec: BucketSpec, wanted: int = 1, *, all_or_none: bool = False) -> Take:
    return buckets_take([(spec, wanted)], all_or_none=all_or_none)[0]


def bucket_peek(spec: BucketSpec) -> Take:
    """How long until the bucket has a token, taking nothing."""
    return bucket_take(spec, 0)
