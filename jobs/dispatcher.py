"""The dispatcher: moves waiting jobs to the broker in fair order, keeping each queue short.

A thread in every worker's main process (capacity no pool slot can take away, as for the
reconciler); one of them holds a lease in Redis and dispatches, the others stand by and take
over within LEASE_SECONDS if it dies. Its loop:
1. per broker queue with live workers: how many messages wait there (lib.broker.queue_depth);
   when fewer than half the target, fill it up to the target. The target is twice the slots of
   the workers serving the queue, or 0.2 s of its recent dispatch rate if that is more: enough
   that no slot waits for the dispatcher, short enough that a newcomer's job is never behind
   much (what waits beyond it waits in the tenants' tables, not in Redis);
2. fill it turn by turn, each turn one tenant's (jobs.services.dispatch), the tenant chosen by
   start-time fair queueing (jobs.fairness) and admitted by its rate limits and concurrency cap;
3. sleep until a submission pokes it, a set-aside tenant comes due, or the next look at depth.
A duplicate dispatcher at a lease's edge is harmless: each job is marked sent by one conditional
UPDATE, and only the one that marked it sends it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown
from django.db import DatabaseError, close_old_connections
from saas_platform.lib.broker import queue_depth
from saas_platform.lib.state_redis import state_key, state_redis
from saas_platform.lib.tenant_context import UnknownTenant, tenant_activated
from saas_platform.lib.worker_liveness import (
    current_incarnation,
    registered_incarnations,
    worker_reports,
)

from billing.limits import tenant_limits
from jobs import fairness
from jobs.services.dispatch import tenant_dispatch_turn, tenant_has_waiting

logger = logging.getLogger(__name__)

LEASE_SECONDS = 5.0
# How often the depth of a full queue is looked at again (a queue drains as workers take jobs).
DEPTH_POLL_SECONDS = 0.02
IDLE_WAIT_SECONDS = 0.5
CAPACITY_CACHE_SECONDS = 1.0
TARGET_SECONDS_OF_WORK = 0.2
MIN_TARGET_PER_SLOT = 2
# Consecutive turns of one queue that send nothing before a round moves on.
MAX_IDLE_TURNS = 20
# Never a busy loop, even when a clock or a due time disagrees with the database's.
MIN_SLEEP_SECONDS = 0.02

_stop = threading.Event()

# Renew only our own lease; take it if it is free.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


@dataclass
class QueueState:
    rate: float = 0.0  # jobs sent per second, smoothed
    sent_since: int = 0
    since: float = field(default_factory=time.monotonic)

    def note(self, sent: int) -> None:
        self.sent_since += sent
        elapsed = time.monotonic() - self.since
        if elapsed >= 0.5:
            current = self.sent_since / elapsed
            self.rate = current if self.rate == 0 else 0.5 * self.rate + 0.5 * current
            self.sent_since, self.since = 0, time.monotonic()


@dataclass
class Dispatcher:
    incarnation: str
    queues: dict[str, QueueState] = field(default_factory=dict)
    _capacity: dict[str, int] = field(default_factory=dict)
    _capacity_at: float = 0.0
    _lease_script: Any = None

    def hold_lease(self) -> bool:
        if self._lease_script is None:
            self._lease_script = state_redis().register_script(_LEASE)
        return bool(
            self._lease_script(
                keys=[state_key("dispatcher", "lease")],
                args=[self.incarnation, int(LEASE_SECONDS * 1000)],
            )
        )

    def capacity(self) -> dict[str, int]:
        """Pool slots of the live workers, per queue they consume."""
        if time.monotonic() - self._capacity_at > CAPACITY_CACHE_SECONDS:
            slots: dict[str, int] = {}
            for report in worker_reports(registered_incarnations()).values():
                for queue in report.queues:
                    slots[queue] = slots.get(queue, 0) + max(1, report.concurrency)
            self._capacity, self._capacity_at = slots, time.monotonic()
        return self._capacity

    def target(self, queue: str, slots: int) -> int:
        state = self.queues.setdefault(queue, QueueState())
        return max(MIN_TARGET_PER_SLOT * slots, math.ceil(state.rate * TARGET_SECONDS_OF_WORK))

    def round(self) -> tuple[int, bool]:
        """One look at every queue; returns (jobs sent, whether some queue was full with work
        still waiting, so that its depth should be looked at again soon).

        The lease is renewed after every turn and the round ends at once if it was lost: a
        standby may have taken over, and two dispatchers would both admit a tenant's cap room.
        """
        sent_total, full_with_work = 0, False
        capacity = self.capacity()
        for queue in sorted(capacity):
            fairness.promote_due(queue)
            target = self.target(queue, capacity[queue])
            depth = queue_depth(queue)
            if depth * 2 > target:
                full_with_work = full_with_work or fairness.pick(queue) is not None
                continue
            room = target - depth
            idle_turns = 0
            while room > 0 and idle_turns < MAX_IDLE_TURNS:
                chosen = fairness.pick(queue)
                if chosen is None:
                    break
                sent = self.turn(chosen, queue, room)
                room -= sent
                sent_total += sent
                self.queues[queue].note(sent)
                # Turns that send nothing (capped, rate-limited, set aside) end the round for
                # this queue after a while, so one look never spins on them.
                idle_turns = 0 if sent else idle_turns + 1
                if not self.hold_lease():
                    return sent_total, False
            if room <= 0:
                full_with_work = True
        return sent_total, full_with_work

    def turn(self, chosen: fairness.Pick, queue: str, room: int) -> int:
        try:
            with tenant_activated(chosen.tenant_id):
                result = tenant_dispatch_turn(
                    tenant_id=chosen.tenant_id, queue=queue, room=room, alone=chosen.alone
                )
                weight = tenant_limits(chosen.tenant_id).weight
                fairness.served(
                    chosen,
                    queue,
                    dispatched=result.sent,
                    weight=weight,
                    more=result.more and result.sent > 0,
                )
                if result.more and result.sent:
                    return result.sent
                # Out of `ready` now. A job committed while this turn ran announced itself to a
                # tenant that was still in `ready` (a no-op): look once more, now that it is out,
                # so such a job puts the tenant straight back instead of waiting for the
                # reconciler. A rate limit, a cap, a suspension or a broker failure sets it
                # aside instead; a tenant whose next job is scheduled sleeps until then.
                if result.set_aside_until is not None:
                    fairness.set_aside(chosen.tenant_id, queue, until=result.set_aside_until)
                elif tenant_has_waiting(queue):
                    fairness.tenant_mark_ready(chosen.tenant_id, queue)
                elif result.next_due is not None:
                    fairness.set_aside(chosen.tenant_id, queue, until=result.next_due)
                return result.sent
        except UnknownTenant:
            fairness.served(chosen, queue, dispatched=0, weight=1.0, more=False)
            return 0

    def next_sleep(self, sent: int, full_with_work: bool) -> float:
        if full_with_work:
            return DEPTH_POLL_SECONDS
        if sent:
            return 0.0
        # Only queues someone serves: a due entry of a queue with no live worker stays due, and
        # would otherwise keep this loop from ever sleeping.
        due = fairness.next_later(set(self.capacity()))
        wait = IDLE_WAIT_SECONDS if due is None else due - time.time()
        return max(MIN_SLEEP_SECONDS, min(IDLE_WAIT_SECONDS, wait))


def _loop() -> None:
    dispatcher = Dispatcher(incarnation=current_incarnation())
    checked_connection_at = time.monotonic()
    while not _stop.is_set():
        if time.monotonic() - checked_connection_at > 1.0:
            # This thread's own connection: replaced when broken or too old, as for tasks.
            close_old_connections()
            checked_connection_at = time.monotonic()
        try:
            if not dispatcher.hold_lease():
                _stop.wait(1.0)  # standing by
                continue
            sent, full_with_work = dispatcher.round()
            pause = dispatcher.next_sleep(sent, full_with_work)
            if pause > 0:
                if full_with_work:
                    _stop.wait(pause)
                else:
                    fairness.wait_for_wake(pause)
        except (redis.RedisError, DatabaseError, OSError) as exc:
            logger.warning("dispatcher: %s (trying again)", exc)
            close_old_connections()
            _stop.wait(1.0)
        except Exception:
            logger.exception("dispatcher failed (trying again)")
            close_old_connections()
            _stop.wait(1.0)


@worker_ready.connect
def _start(**_: Any) -> None:
    _stop.clear()
    threading.Thread(target=_loop, name="jobs-dispatcher", daemon=True).start()


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@worker_shutdown.connect
def _end(**_: Any) -> None:
    _stop.set()
    # Hand over at once rather than after the lease runs out: a standby takes it within a second.
    with contextlib.suppress(redis.RedisError):
        state_redis().eval(_RELEASE, 1, state_key("dispatcher", "lease"), current_incarnation())
