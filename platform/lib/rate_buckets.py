"""Token buckets in Redis, shared by every process and host: cluster-wide rate limits.

A bucket holds up to `burst` tokens and refills at `rate` tokens per second; taking n jobs' worth
takes n tokens, or as many as there are. One Lua script takes from several buckets in one round
trip, atomically, on Redis's own clock (`TIME`), so hosts whose clocks disagree still share one
limit. (The `limits` package has fixed and sliding windows, not a token bucket with a burst,
and its windows let twice the rate through across a window's edge.)

State per bucket: a hash {tokens, at}, expiring once it would be full again anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saas_platform.lib.state_redis import state_redis

# KEYS: the buckets. ARGV: rate, burst, wanted for each bucket in turn. Returns, per bucket,
# {granted, microseconds until the next token (0 if one is left)}. Lua numbers are doubles; the
# reply converts them to integers, hence microseconds.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[i * 3 - 2])
  local burst = tonumber(ARGV[i * 3 - 1])
  local wanted = tonumber(ARGV[i * 3])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then
    tokens = burst
    at = now
  end
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  local granted = math.min(wanted, math.floor(tokens))
  tokens = tokens - granted
  local wait = 0
  if tokens < 1 then
    wait = (1 - tokens) / rate
  end
  if granted > 0 or state[1] == false then
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
    redis.call('PEXPIRE', key, math.ceil((burst / rate + 1) * 1000))
  end
  out[i] = {granted, math.ceil(wait * 1000000)}
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


def buckets_take(specs: Sequence[tuple[BucketSpec, int]]) -> list[Take]:
    """Take up to `wanted` tokens from each bucket; returns what each gave, in order."""
    global _script
    if not specs:
        return []
    if _script is None:
        _script = state_redis().register_script(_TAKE)
    args: list[float | int] = []
    for spec, wanted in specs:
        args += [spec.rate, max(1, spec.burst), max(0, wanted)]
    replies = _script(keys=[spec.key for spec, _ in specs], args=args)
    return [Take(granted=int(granted), next_token_in=int(wait) / 1e6) for granted, wait in replies]


def bucket_take(spec: BucketSpec, wanted: int = 1) -> Take:
    return buckets_take([(spec, wanted)])[0]


def bucket_peek(spec: BucketSpec) -> Take:
    """How long until the bucket has a token, taking nothing."""
    return bucket_take(spec, 0)
