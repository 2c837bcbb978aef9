"""saas_platform.lib.rate_buckets: token buckets in the suite's Redis (keys under this run's prefix).

Timings are bounded from both sides by what this process measured around the calls: the script
runs on Redis's clock somewhere inside them.
"""

from __future__ import annotations

import math
import time
import uuid

import pytest
from saas_platform.lib import rate_buckets
from saas_platform.lib.rate_buckets import (
    BucketSpec,
    bucket_peek,
    bucket_take,
    buckets_take,
)
from saas_platform.lib.state_redis import state_key, state_redis


def _spec(rate: float, burst: int) -> BucketSpec:
    return BucketSpec(key=state_key("test-bucket", uuid.uuid4().hex), rate=rate, burst=burst)


def _tokens(spec: BucketSpec) -> float:
    return float(state_redis().hget(spec.key, "tokens") or "nan")


def test_a_new_bucket_is_full_and_gives_at_most_what_it_holds():
    spec = _spec(rate=1, burst=5)
    assert bucket_take(spec, 3).granted == 3
    assert bucket_take(spec, 5).granted == 2  # the rest, not what was asked
    assert bucket_take(spec).granted == 0


def test_tokens_refill_at_the_rate():
    spec = _spec(rate=10, burst=10)
    before_first = time.monotonic()
    assert bucket_take(spec, 10).granted == 10
    after_first = time.monotonic()
    time.sleep(0.3)
    before_second = time.monotonic()
    granted = bucket_take(spec, 10).granted
    after_second = time.monotonic()
    # Redis saw between (before_second - after_first) and (after_second - before_first) pass.
    assert math.floor((before_second - after_first) * 10) <= granted
    assert granted <= math.floor((after_second - before_first) * 10)


def test_the_burst_caps_the_tokens_however_long_the_bucket_waits():
    spec = _spec(rate=100, burst=3)
    assert bucket_take(spec, 3).granted == 3
    time.sleep(0.2)  # 20 tokens' worth of refill
    assert bucket_take(spec, 10).granted == 3


def test_next_token_in_is_the_time_until_a_token_is_there():
    spec = _spec(rate=2, burst=2)
    assert bucket_take(spec).next_token_in == 0  # one is left
    started = time.monotonic()
    emptied = bucket_take(spec)
    assert emptied.granted == 1
    assert 0.5 - (time.monotonic() - started) - 0.01 <= emptied.next_token_in <= 0.5
    refused = bucket_take(spec)
    assert (refused.granted, 0 < refused.next_token_in <= emptied.next_token_in) == (0, True)
    time.sleep(refused.next_token_in)
    assert bucket_take(spec).granted == 1


def test_a_peek_takes_nothing():
    spec = _spec(rate=1, burst=2)
    for _ in range(3):
        assert bucket_peek(spec) == rate_buckets.Take(granted=0, next_token_in=0, ready_in=0)
    assert bucket_take(spec, 2).granted == 2
    tokens = _tokens(spec)
    peeked = bucket_peek(spec)
    assert peeked.granted == 0
    assert 0 < peeked.next_token_in <= 1
    assert _tokens(spec) == tokens  # the state was not even written


def test_several_buckets_are_taken_in_one_call_each_on_its_own():
    empty, full, small = _spec(rate=1, burst=1), _spec(rate=1, burst=5), _spec(rate=1, burst=2)
    bucket_take(empty)
    takes = buckets_take([(empty, 1), (full, 4), (small, 3)])
    assert [take.granted for take in takes] == [0, 4, 2]
    assert takes[0].next_token_in > 0
    assert takes[1].next_token_in == 0
    assert buckets_take([]) == []


def test_the_state_lives_in_redis_on_redis_clock_and_survives_between_calls(monkeypatch):
    spec = _spec(rate=1, burst=4)
    bucket_take(spec, 3)
    seconds, microseconds = state_redis().time()
    at = float(state_redis().hget(spec.key, "at") or 0)
    assert abs(at - (seconds + microseconds / 1e6)) < 1
    # As if from another process: a fresh script object, the same state.
    monkeypatch.setattr(rate_buckets, "_script", None)
    assert bucket_take(spec, 4).granted == 1


def test_a_bucket_expires_only_once_it_would_be_full_again():
    spec = _spec(rate=1, burst=2)
    bucket_take(spec, 2)
    assert 2000 < state_redis().pttl(spec.key) <= 3000  # 2 s to refill, plus a second


def test_all_or_none_gives_everything_or_takes_nothing():
    spec = _spec(rate=1, burst=5)
    bucket_take(spec, 3)
    refused = bucket_take(spec, 3, all_or_none=True)
    assert refused.granted == 0
    # One token short at 1 token/s (less what has refilled since).
    assert 0.9 < refused.ready_in <= 1
    assert bucket_take(spec, 2, all_or_none=True).granted == 2  # the refused take took none
    assert bucket_take(spec, 1, all_or_none=True).granted == 0


def test_all_or_none_beyond_the_burst_waits_for_a_full_bucket_then_leaves_it_in_debt():
    spec = _spec(rate=10, burst=5)
    bucket_take(spec, 1)
    refused = bucket_take(spec, 8, all_or_none=True)
    assert refused.granted == 0
    assert 0 < refused.ready_in <= 0.1  # until full: the 1 token taken
    time.sleep(refused.ready_in)
    granted = bucket_take(spec, 8, all_or_none=True)
    assert granted.granted == 8
    # 5 - 8 = -3 tokens: 4 to refill before the next one, at 10/s.
    assert 0.35 < granted.next_token_in <= 0.4
    assert bucket_take(spec, 1).granted == 0  # a bucket in debt gives nothing...
    assert _tokens(spec) < 0  # ...and gets nothing back
    assert 1500 < state_redis().pttl(spec.key) <= 1800  # 0.8 s to refill, plus a second


def test_ready_in_is_zero_when_everything_was_granted():
    spec = _spec(rate=1, burst=3)
    assert bucket_take(spec, 3, all_or_none=True).ready_in == 0
    partial = bucket_take(spec, 2)
    assert partial.granted == 0
    assert 1.9 < partial.ready_in <= 2


def test_a_bucket_without_a_rate_is_refused():
    with pytest.raises(ValueError, match="rate must be above 0"):
        bucket_take(_spec(rate=0, burst=1))


def test_a_cap_on_a_counter_refuses_the_take_whole_and_takes_nothing():
    spec = _spec(rate=1, burst=10)
    counter = state_key("test-cap", uuid.uuid4().hex)
    state_redis().hset(counter, "jobs", 7)
    cap = rate_buckets.CounterCap(key=counter, field="jobs", limit=10, amount=3)
    assert bucket_take(spec, 3, all_or_none=True, cap=cap).granted == 3  # 7 + 3 is within 10
    over = rate_buckets.CounterCap(key=counter, field="jobs", limit=10, amount=4)
    with pytest.raises(rate_buckets.CapReached) as refused:
        bucket_take(spec, 4, all_or_none=True, cap=over)
    assert refused.value.used == 7
    assert refused.value.cap is over
    assert math.isclose(_tokens(spec), 7, abs_tol=0.1)  # nothing taken by the refused take
    assert state_redis().hget(counter, "jobs") == b"7"  # checked, never counted
    # A counter that does not exist yet counts as 0.
    fresh = rate_buckets.CounterCap(key=counter + "-none", field="jobs", limit=2, amount=2)
    assert bucket_take(spec, 2, cap=fresh).granted == 2
