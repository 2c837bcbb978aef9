"""The one beat for every tenant: `celery -A saas_platform beat` with CELERY_BEAT_SCHEDULER set
to `jobs.schedules.beat:TenantBeatScheduler`.

A subclass of django-celery-beat's DatabaseScheduler: the platform's own entries (the public
schema's PeriodicTask table, filled from CELERY_BEAT_SCHEDULE as in the seed) are its parent's
business, published from public; tenants' schedules are this class's:

- every enabled schedule of every active tenant is an Entry, keyed by (tenant, schedule), in a
  heap of fire times, so a tick costs O(due entries), not O(all entries) (django-celery-beat
  walks every entry every tick: django-celery-beat#675, #786);
- changes are noticed through the Redis set of changed tenants (jobs.schedules.changes), drained
  every tick (at most CHANGE_POLL_SECONDS apart), and only those tenants are read again; the
  tenant table is read every TENANTS_REFRESH_SECONDS (suspended, resumed, deleted tenants), and
  everything every FULL_RELOAD_SECONDS as a backstop for a lost announcement;
- due occurrences are submitted by jobs.schedules.occurrences with their tenant active (the
  platform's own row, never a stored header), through the normal job service, a tenant's due
  together in one transaction;
- only the holder of the lease (jobs.schedules.lease) dispatches anything; the others stand by.

A bad entry (its job type gone, its row unreadable, its tenant deleted mid-tick) is logged and
skipped, and never stops other tenants.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler
from django_tenants.utils import get_tenant_model
from saas_platform.lib import metrics
from saas_platform.lib.telemetry import context_line, context_scoped
from saas_platform.lib.tenant_context import UnknownTenant, tenant_enter

from jobs.models import MissedRuns, Overlap, Schedule
from jobs.schedules.changes import changed_tenants_pop
from jobs.schedules.lease import STANDBY_POLL_SECONDS, Lease
from jobs.schedules.occurrences import (
    Due,
    Result,
    TenantDues,
    buffered_release,
    occurrences_run,
    occurrences_run_across,
)
from jobs.schedules.timing import Timing, TimingError, jitter_offset, latest_until, next_after

logger = logging.getLogger(__name__)

# An API change takes effect within this plus one tick's work (the contract says 2 s).
CHANGE_POLL_SECONDS = 0.5
TENANTS_REFRESH_SECONDS = 2.0
FULL_RELOAD_SECONDS = 300.0
# An occurrence reached this late is still "on time", whatever its missed-runs policy.
LATE_GRACE = timedelta(seconds=10)
# A buffer_one schedule holding an occurrence looks at its previous job this often.
BUFFER_POLL = timedelta(seconds=1)
# A tick that cannot reach the database tries an occurrence again after this long.
DATABASE_RETRY = timedelta(seconds=1)
# A tick fires due entries for at most this long (well inside the lease's 5 s, and short
# enough that an API change still takes effect within the contract's 2 s while the beat works
# through a burst); what is left waits in the heap for the next tick.
FIRE_BUDGET_SECONDS = 1.0
# Tenants whose due occurrences share one transaction (jobs.schedules.occurrences.
# occurrences_run_across): a tenant's own round trips were most of its cost.
TENANTS_PER_TRANSACTION = 50
# Such transactions run in threads of their own, each on its own connection, this many at once:
# one's statements run in PostgreSQL while another's jobs are built here (about 1.5x the
# occurrences a second of one thread: 200 tenants of one occurrence each, two runs each way
# alternating, 525-889 ms a round against 753-1,137).
FIRING_THREADS = 2


def _run_across(batch: list[TenantDues]) -> dict[int, dict[int, Result]]:
    """occurrences_run_across in a thread of the pool, on that thread's own connection."""
    tenant_enter(None)
    try:
        return occurrences_run_across(batch)
    except Exception:
        connection.close_if_unusable_or_obsolete()
        raise


@dataclass
class Entry:
    tenant_id: int
    schedule_id: int
    timing: Timing
    missed_runs: str
    catch_up: timedelta
    overlap: str
    jitter_seconds: int
    next_due: datetime
    version: int
    buffered: bool = False


@dataclass(frozen=True)
class _Prepared:
    now: datetime
    planned: dict[int, list[tuple[Entry, datetime]]]
    batch: list[TenantDues]


_COLUMNS = (
    "id", "timezone", "anchor", "missed_runs", "catch_up_seconds", "overlap", "jitter_seconds",
    "last_due_at", "periodic_task__interval__every", "periodic_task__crontab__minute",
    "periodic_task__crontab__hour", "periodic_task__crontab__day_of_month",
    "periodic_task__crontab__month_of_year", "periodic_task__crontab__day_of_week",
    "periodic_task__clocked__clocked_time",
)  # fmt: skip


def _lag_observe(entry: Entry, due: datetime) -> None:
    """beat_lag_seconds: from when the occurrence was meant to fire (its due time plus the
    schedule's deliberate jitter, as _push computed it) to its job's commit, just now."""
    meant = due
    if entry.jitter_seconds:
        following = next_after(entry.timing, due)
        meant += jitter_offset(entry.schedule_id, entry.jitter_seconds, due, following)
    try:
        metrics.BEAT_LAG_SECONDS.observe(max(0.0, (timezone.now() - meant).total_seconds()))
    except Exception as exc:  # a metric never stops the beat's schedule
        # Seen in a beat embedded in a worker (`worker -B`): prometheus-client's multiprocess
        # files, inherited across the fork, failed to close (OSError: Illegal seek). The
        # occurrence is submitted by now: raising here logged it as skipped, an error in the
        # worker's log (tests/test_worker_death.py in a fresh clone's run).
        logger.warning("beat_lag_seconds not recorded: %s", exc)


class TenantBook:
    """Every tenant's entries and the heap of their fire times (lazy deletion by version)."""

    def __init__(self, *, keep_connections: bool = False) -> None:
        """`keep_connections`: the firing threads keep their database connections from one tick
        to the next (the beat process, which closes them with close()); otherwise they close
        them at the end of every tick that used them (a book in a test or a shell, whose
        database may be dropped while the book lives)."""
        self.entries: dict[int, dict[int, Entry]] = {}
        self.tenants: dict[int, Any] = {}  # active tenant rows by id
        self.heap: list[tuple[float, int, int, int]] = []
        self._versions = itertools.count(1)
        self.tenants_read_at = 0.0
        self.loaded_at = 0.0
        self.dispatched = 0
        self._executor: ThreadPoolExecutor | None = None
        self._keep_connections = keep_connections
        # Tenants whose schedules changed since the last run_due: they go first.
        self.changed: set[int] = set()

    # --- loading ---------------------------------------------------------------------------

    def tenants_refresh(self) -> tuple[set[int], set[int]]:
        """Re-read the tenant table: (tenants now active that were not, tenants gone or
        suspended). One query, whatever the number of schedules."""
        tenant_enter(None)
        rows = {
            tenant.pk: tenant
            # A purged tenant's row outlives its schema (tenant_delete keeps it for invoices).
            for tenant in get_tenant_model().objects.filter(
                is_active=True, is_template=False, purged_at__isnull=True
            )
        }
        came = set(rows) - set(self.tenants)
        went = set(self.tenants) - set(rows)
        self.tenants = rows
        self.tenants_read_at = time.monotonic()
        return came, went

    def load_all(self) -> None:
        began = time.monotonic()
        self.tenants_refresh()
        self.entries.clear()
        self.heap.clear()
        for tenant_id in list(self.tenants):
            self.load_tenant(tenant_id)
        self.loaded_at = time.monotonic()
        logger.info(
            "beat loaded %d schedules of %d tenants in %.2fs",
            sum(len(e) for e in self.entries.values()), len(self.tenants),
            time.monotonic() - began,
        )  # fmt: skip

    def drop_tenant(self, tenant_id: int) -> None:
        # Their heap items become stale: nothing under this tenant matches their version.
        self.entries.pop(tenant_id, None)

    def load_tenant(self, tenant_id: int) -> None:
        """(Re)read one tenant's enabled schedules: one query in its schema."""
        self.drop_tenant(tenant_id)
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return  # suspended or deleted: nothing fires
        now = timezone.now()
        try:
            tenant_enter(tenant)
            rows = list(Schedule.objects.filter(periodic_task__enabled=True).values_list(*_COLUMNS))
        except DatabaseError:
            # Its schema went away (deleted mid-tick) or its table is unreadable: this tenant
            # only; the next tenant refresh decides again.
            logger.exception("beat could not read the schedules of tenant %s", tenant_id)
            connection.close_if_unusable_or_obsolete()
            return
        finally:
            tenant_enter(None)
        book: dict[int, Entry] = {}
        for row in rows:
            try:
                entry = self._entry(tenant_id, row, now)
            except (TimingError, ValueError, TypeError, RuntimeError):
                logger.exception("beat skips schedule %s of tenant %s", row[0], tenant_id)
                continue
            if entry is not None:
                book[entry.schedule_id] = entry
                self._push(entry)
        self.entries[tenant_id] = book

    def _entry(self, tenant_id: int, row: tuple[Any, ...], now: datetime) -> Entry | None:
        (schedule_id, tz, anchor, missed, catch_up, overlap, jitter, last_due, every,
         minute, hour, dom, month, dow, clocked) = row  # fmt: skip
        cron = f"{minute} {hour} {dom} {month} {dow}" if minute is not None else None
        timing = Timing(tz=tz, cron=cron, interval_seconds=every, run_at=clocked, anchor=anchor)
        due = next_after(timing, last_due or now)
        if due is None:
            return None  # a clocked schedule already run, or a cron with no future
        return Entry(
            tenant_id=tenant_id,
            schedule_id=schedule_id,
            timing=timing,
            missed_runs=missed,
            catch_up=timedelta(seconds=catch_up),
            overlap=overlap,
            jitter_seconds=jitter,
            next_due=due,
            version=next(self._versions),
            buffered=overlap == Overlap.BUFFER_ONE,
        )

    def _push(self, entry: Entry, at: datetime | None = None) -> None:
        if at is None:
            at = entry.next_due
            if entry.jitter_seconds:
                following = next_after(entry.timing, entry.next_due)
                at += jitter_offset(entry.schedule_id, entry.jitter_seconds, at, following)
        heapq.heappush(
            self.heap, (at.timestamp(), entry.tenant_id, entry.schedule_id, entry.version)
        )

    # --- dispatching -----------------------------------------------------------------------

    def run_due(self, now_ts: float) -> float:
        """Fire the entries due by `now_ts`; seconds until the next one (or a long wait).

        Every due entry is taken from the heap at once and grouped by tenant, tenants whose
        schedules changed since the last call first, the others in the order of their earliest
        due entry; TENANTS_PER_TRANSACTION tenants' entries are fired
        together (jobs.schedules.occurrences.occurrences_run_across: one transaction), in
        FIRING_THREADS threads; the heap and the entries are this thread's alone (each
        transaction's results come back here). After FIRE_BUDGET_SECONDS the rest goes back to
        the heap, for the next tick: a beat behind its entries still renews its lease and
        applies changes every tick.
        """
        taken: dict[int, list[tuple[float, int, int, int]]] = {}
        while self.heap and self.heap[0][0] <= now_ts:
            item = heapq.heappop(self.heap)
            _, tenant_id, schedule_id, version = item
            entry = self.entries.get(tenant_id, {}).get(schedule_id)
            if entry is None or entry.version != version:
                continue  # changed or dropped since it was pushed
            taken.setdefault(tenant_id, []).append(item)
        # A changed tenant first (a schedule created due now, a resumed one): behind on its
        # occurrences the beat still applies a change within the contract's 2 s. The rest stay in
        # the order of their earliest due entry (a stable sort).
        groups = sorted(taken.items(), key=lambda group: group[0] not in self.changed)
        self.changed.clear()
        began = time.monotonic()
        running: deque[tuple[_Prepared, Future[dict[int, dict[int, Result]]]]] = deque()
        threaded = False
        for start in range(0, len(groups), TENANTS_PER_TRANSACTION):
            batch = groups[start : start + TENANTS_PER_TRANSACTION]
            if start and time.monotonic() - began >= FIRE_BUDGET_SECONDS:
                for _, items in batch:
                    for item in items:
                        heapq.heappush(self.heap, item)
                continue
            tenants = [(tenant_id, self._of(tenant_id, items)) for tenant_id, items in batch]
            if len(tenants) == 1:
                self._fire(*tenants[0])  # in this thread, as a tenant alone always is
                continue
            prepared = self._prepare(tenants)
            if prepared is not None:
                threaded = True
                running.append((prepared, self._pool().submit(_run_across, prepared.batch)))
            while len(running) >= FIRING_THREADS:
                self._finish(*running.popleft())
        while running:
            self._finish(*running.popleft())
        if threaded and not self._keep_connections:
            self.connections_close()
        if not self.heap:
            return 60.0
        return max(0.0, self.heap[0][0] - time.time())

    def _of(self, tenant_id: int, items: list[tuple[float, int, int, int]]) -> list[Entry]:
        """The entries of a tenant's heap items, one per schedule (a held entry may be in the
        heap twice)."""
        return list({item[2]: self.entries[tenant_id][item[2]] for item in items}.values())

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=FIRING_THREADS, thread_name_prefix="beat-fire"
            )
        return self._executor

    def connections_close(self) -> None:
        """Close the firing threads' database connections (each thread its own)."""
        if self._executor is None:
            return
        # One task per thread: each waits at the barrier until all have closed theirs, so no
        # thread takes two.
        barrier = threading.Barrier(FIRING_THREADS)

        def close() -> None:
            connection.close()
            barrier.wait(timeout=30)

        for future in [self._executor.submit(close) for _ in range(FIRING_THREADS)]:
            future.result()

    def close(self) -> None:
        self.connections_close()
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def _prepare(self, groups: list[tuple[int, list[Entry]]]) -> _Prepared | None:
        now = timezone.now()
        planned: dict[int, list[tuple[Entry, datetime]]] = {}
        batch: list[TenantDues] = []
        for tenant_id, entries in groups:
            tenant = self.tenants.get(tenant_id)
            if tenant is None:
                self.drop_tenant(tenant_id)
                continue
            if any(entry.buffered for entry in entries):
                self._fire(tenant_id, entries)
                continue
            try:
                mine = [(e, at) for e in entries if (at := self._plan(e, now)) is not None]
            except Exception:
                # _fire plans them again, and logs and skips what cannot be planned.
                self._fire(tenant_id, entries)
                continue
            if mine:
                planned[tenant_id] = mine
                dues = [Due(entry.schedule_id, at) for entry, at in mine]
                batch.append(TenantDues(tenant_id, tenant.schema_name, dues))
        return _Prepared(now, planned, batch) if batch else None

    def _finish(self, prepared: _Prepared, future: Future[dict[int, dict[int, Result]]]) -> None:
        try:
            results = future.result()
        except (OperationalError, InterfaceError) as exc:
            logger.warning("beat cannot reach the database: %s", exc)
            for mine in prepared.planned.values():
                for entry, _ in mine:
                    self._push(entry, at=prepared.now + DATABASE_RETRY)
            return
        except Exception as exc:
            # Another beat recorded one first, or one tenant's schema is gone: nothing was
            # recorded; tenant by tenant tells which, and runs the others.
            logger.info("beat runs %d tenants one by one: %s", len(prepared.batch), exc)
            for tenant_id, mine in prepared.planned.items():
                self._fire(tenant_id, [entry for entry, _ in mine])
            return
        for tenant_id, mine in prepared.planned.items():
            for entry, latest in mine:
                self._settled(entry, latest, results[tenant_id][entry.schedule_id])

    def _fire(self, tenant_id: int, entries: list[Entry]) -> None:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            self.drop_tenant(tenant_id)
            return
        # What these entries log (and a Sentry event they raise) carries their tenant, and the
        # schedule when there is one; the beat's own lines and events after them do not.
        single = entries[0].schedule_id if len(entries) == 1 else None
        with context_scoped(tenant=tenant.schema_name, schedule=single):
            self._fire_in_tenant(tenant, entries)

    def _fire_in_tenant(self, tenant: Any, entries: list[Entry]) -> None:
        now = timezone.now()
        planned: list[tuple[Entry, datetime]] = []
        try:
            tenant_enter(tenant)
            for entry in entries:
                latest = self._plan(entry, now)
                if latest is not None:
                    planned.append((entry, latest))
            results = occurrences_run([Due(entry.schedule_id, at) for entry, at in planned])
        except UnknownTenant:
            self.drop_tenant(entries[0].tenant_id)
            return
        except (OperationalError, InterfaceError) as exc:
            # The database is unreachable: try the same occurrences again shortly, without
            # moving on (their missed-runs policy decides once the database is back).
            logger.warning("beat cannot reach the database: %s", exc)
            connection.close_if_unusable_or_obsolete()
            for entry in entries:
                self._push(entry, at=now + DATABASE_RETRY)
            return
        except Exception:
            connection.close_if_unusable_or_obsolete()
            if len(entries) > 1:
                # One bad entry must not stop the tenant's others: each on its own, so only
                # the bad one is skipped (an entry already moved on only looks again).
                for entry in entries:
                    self._fire(entry.tenant_id, [entry])
                return
            # One bad entry must not stop the others: log it and move it to its next time.
            logger.exception(
                "beat skips an occurrence of schedule %s of tenant %s",
                entries[0].schedule_id, entries[0].tenant_id,
            )  # fmt: skip
            self._advance(entries[0], entries[0].next_due, None)
            return
        # The tenant stays active: the next entry is often the same tenant's, and the tick
        # returns to public before anything else runs.
        for entry, latest in planned:
            self._settled(entry, latest, results[entry.schedule_id])

    def _settled(self, entry: Entry, latest: datetime, result: Result) -> None:
        if result == Result.SUBMITTED:
            self.dispatched += 1
            _lag_observe(entry, latest)
        self._advance(entry, latest, result)

    def _plan(self, entry: Entry, now: datetime) -> datetime | None:
        """The due time of the occurrence `entry` runs now, or None when it runs nothing now
        (its held occurrence still waits, or its time is still ahead, or it was missed: moved on
        here)."""
        if entry.buffered:
            entry.buffered = not buffered_release(schedule_id=entry.schedule_id)
        due = entry.next_due
        if due > now:
            # Woken only to look at a held occurrence; its own time is still ahead.
            if entry.buffered:
                self._push(entry, at=min(now + BUFFER_POLL, due))
            return None
        latest = latest_until(entry.timing, due, now)
        if now - latest <= LATE_GRACE or (
            entry.missed_runs == MissedRuns.RUN_ONCE and now - latest <= entry.catch_up
        ):
            return latest
        with context_line(schedule=entry.schedule_id):
            logger.info(
                "schedule %s of tenant %s: occurrence %s missed (policy %s)",
                entry.schedule_id, entry.tenant_id, latest.isoformat(), entry.missed_runs,
            )  # fmt: skip
        self._advance(entry, latest, None)
        return None

    def _advance(self, entry: Entry, latest: datetime, result: Result | None) -> None:
        """Move `entry` past the occurrence due at `latest`, by what became of it."""
        if result in (Result.GONE, Result.DISABLED):
            self.entries.get(entry.tenant_id, {}).pop(entry.schedule_id, None)
            return
        if result == Result.BUFFERED:
            entry.buffered = True
        following = next_after(entry.timing, latest)
        if following is None:
            self.entries.get(entry.tenant_id, {}).pop(entry.schedule_id, None)
            return
        entry.next_due = following
        entry.version = next(self._versions)
        self._push(entry)
        if entry.buffered:
            self._push(entry, at=min(timezone.now() + BUFFER_POLL, following))

    def refresh(self) -> None:
        """Apply what changed: announced tenants, the tenant table, the periodic full reload."""
        if time.monotonic() - self.loaded_at >= FULL_RELOAD_SECONDS:
            self.load_all()
            return
        try:
            changed = changed_tenants_pop()
        except Exception as exc:  # Redis down: the full reload catches up later
            logger.warning("beat could not read changed tenants: %s", exc)
            changed = set()
        if time.monotonic() - self.tenants_read_at >= TENANTS_REFRESH_SECONDS:
            came, went = self.tenants_refresh()
            for tenant_id in went:
                self.drop_tenant(tenant_id)
            changed |= came
        for tenant_id in changed:
            self.load_tenant(tenant_id)
        self.changed |= changed


class TenantBeatScheduler(DatabaseScheduler):  # type: ignore[misc]  # untyped parent
    """django-celery-beat's scheduler for the platform's entries, plus every tenant's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.book = TenantBook(keep_connections=True)
        self.lease = Lease()
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        tenant_enter(None)
        was_active = self.lease.held
        if not self.lease.hold():
            if was_active:
                logger.warning("beat stands by: lease lost")
            return STANDBY_POLL_SECONDS
        if self.lease.acquired_now:
            logger.info("beat holds the lease; dispatching")
            self.book.load_all()
        # The platform's entries (public schema), as django-celery-beat runs them.
        platform_wait = float(super().tick(*args, **kwargs) or self.max_interval)
        tenant_enter(None)
        self.book.refresh()
        tenant_wait = self.book.run_due(datetime.now(UTC).timestamp())
        return min(platform_wait, tenant_wait, CHANGE_POLL_SECONDS)

    def close(self) -> None:
        self.book.close()
        self.lease.release()
        super().close()
