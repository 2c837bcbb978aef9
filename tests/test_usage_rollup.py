"""billing.rollup: the Redis day counters copied into UsageDay / UsageMonth, idempotently.

Counts are made with billing.metering.usage_count at chosen moments (days in 2001-2007, which
no other test counts on), so every figure here is exact. A roll-up stopped half-way (an
exception after its first batch, and a real SIGKILL of `manage.py usage_rollup`) and run again
neither loses nor doubles a count.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from saas_platform.lib.state_redis import state_redis

from billing.metering import day_key, dirty_key, month_key, usage_count
from billing.models import UsageDay, UsageMonth
from billing.rollup import usage_rollup
from tests.workers import REPO, worker_environment

pytestmark = pytest.mark.usefixtures("tenant_db")


def _at(day: date, seconds: float = 3600) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=seconds)


def _clear(tenant_id: int, days: list[date]) -> None:
    client = state_redis()
    client.delete(*[day_key(tenant_id, d) for d in days])
    client.delete(*{month_key(tenant_id, d) for d in days})
    client.srem(dirty_key(), *[f"{tenant_id}:{d.isoformat()}" for d in days])
    UsageDay.objects.filter(tenant_id=tenant_id, day__in=days).delete()
    UsageMonth.objects.filter(
        tenant_id=tenant_id, month__in={d.replace(day=1) for d in days}
    ).delete()


def _dirty(tenant_id: int, days: list[date]) -> set[str]:
    members = {m.decode() for m in state_redis().smembers(dirty_key())}  # type: ignore[union-attr]
    return members & {f"{tenant_id}:{d.isoformat()}" for d in days}


def test_a_job_finishing_at_235959_9_on_a_months_last_day_is_that_months(tenant_db):
    tenant = tenant_db.acme
    last = date(2001, 1, 31)
    first = date(2001, 2, 1)
    _clear(tenant.pk, [last, first])
    usage_count(tenant_id=tenant.pk, attempts=1, run_seconds=2.5, at=_at(last, 86_399.9))
    usage_count(tenant_id=tenant.pk, jobs=1, at=_at(last, 86_399.9))
    usage_count(tenant_id=tenant.pk, jobs=1, attempts=1, at=_at(first, 0.0))
    usage_rollup()
    january = UsageMonth.objects.get(tenant=tenant, month=date(2001, 1, 1))
    february = UsageMonth.objects.get(tenant=tenant, month=date(2001, 2, 1))
    assert (january.jobs, january.attempts, january.run_ms) == (1, 1, 2500)
    assert (february.jobs, february.attempts, february.run_ms) == (1, 1, 0)


def test_rolling_up_twice_changes_nothing_and_later_counts_are_added(tenant_db):
    tenant = tenant_db.acme
    day = date(2002, 3, 4)
    _clear(tenant.pk, [day])
    for _ in range(7):
        usage_count(tenant_id=tenant.pk, jobs=1, attempts=2, run_seconds=0.25, at=_at(day))
    usage_rollup()
    row = UsageDay.objects.get(tenant=tenant, day=day)
    assert (row.jobs, row.attempts, row.run_ms) == (7, 14, 1750)
    assert _dirty(tenant.pk, [day]) == set()
    # Again, with nothing new: the same row, not a doubled one.
    usage_rollup()
    row.refresh_from_db()
    assert (row.jobs, row.attempts, row.run_ms) == (7, 14, 1750)
    usage_count(tenant_id=tenant.pk, jobs=3, at=_at(day))
    assert _dirty(tenant.pk, [day]) == {f"{tenant.pk}:{day.isoformat()}"}
    usage_rollup()
    row.refresh_from_db()
    assert row.jobs == 10
    assert UsageMonth.objects.get(tenant=tenant, month=day.replace(day=1)).jobs == 10


def test_an_older_copy_never_overwrites_a_newer_one(tenant_db):
    """Two roll-ups overlapping: the one that read the hash first writes last, and loses."""
    from billing.rollup import _read, _write

    tenant = tenant_db.acme
    day = date(2002, 5, 6)
    _clear(tenant.pk, [day])
    usage_count(tenant_id=tenant.pk, jobs=1, at=_at(day))
    member = f"{tenant.pk}:{day.isoformat()}"
    [stale], _ = _read([member])
    usage_count(tenant_id=tenant.pk, jobs=1, at=_at(day))
    [fresh], _ = _read([member])
    assert _write([fresh]) == 1
    assert _write([stale]) == 0
    assert UsageDay.objects.get(tenant=tenant, day=day).jobs == 2


def test_a_rollup_that_fails_after_its_first_batch_loses_and_doubles_nothing_when_rerun(tenant_db):
    tenant = tenant_db.acme
    days = [date(2003, 1, 1) + timedelta(days=n) for n in range(40)]
    _clear(tenant.pk, days)
    for n, day in enumerate(days):
        usage_count(tenant_id=tenant.pk, jobs=n + 1, attempts=1, at=_at(day))

    class Stop(Exception):
        pass

    def stop(number: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        usage_rollup(batch_size=5, after_batch=stop)
    written = UsageDay.objects.filter(tenant=tenant, day__in=days).count()
    assert 0 < written < len(days), "the first run should have stopped half-way"
    usage_rollup(batch_size=5)
    usage_rollup(batch_size=5)
    rows = {r.day: r.jobs for r in UsageDay.objects.filter(tenant=tenant, day__in=days)}
    assert rows == {day: n + 1 for n, day in enumerate(days)}
    total = sum(n + 1 for n in range(len(days)))
    months = UsageMonth.objects.filter(tenant=tenant, month__in={d.replace(day=1) for d in days})
    assert sum(m.jobs for m in months) == total
    assert _dirty(tenant.pk, days) == set()


def test_a_rollup_killed_with_sigkill_and_run_again_counts_every_job_once(tenant_db):
    tenant = tenant_db.globex
    days = [date(2004, 1, 1) + timedelta(days=n) for n in range(1500)]
    _clear(tenant.pk, days)
    pipe = state_redis().pipeline(transaction=False)
    for n, day in enumerate(days):
        usage_count(tenant_id=tenant.pk, jobs=n % 7 + 1, attempts=1, at=_at(day), pipe=pipe)
    pipe.execute()
    expected = {day: n % 7 + 1 for n, day in enumerate(days)}

    rollup = subprocess.Popen(
        [sys.executable, "manage.py", "usage_rollup", "--batch-size", "1"],
        cwd=REPO,
        env=worker_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    written = 0
    while time.monotonic() < deadline and rollup.poll() is None:
        written = UsageDay.objects.filter(tenant=tenant, day__in=days).count()
        if written >= 20:
            break
        time.sleep(0.01)
    rollup.send_signal(signal.SIGKILL)
    rollup.wait(30)
    assert rollup.returncode == -signal.SIGKILL, rollup.stderr.read() if rollup.stderr else ""
    part = UsageDay.objects.filter(tenant=tenant, day__in=days).count()
    assert 20 <= part < len(days), f"killed after {part} of {len(days)}: not half-way"

    usage_rollup()
    rows = {r.day: r.jobs for r in UsageDay.objects.filter(tenant=tenant, day__in=days)}
    assert rows == expected
    months = UsageMonth.objects.filter(tenant=tenant, month__in={d.replace(day=1) for d in days})
    assert sum(m.jobs for m in months) == sum(expected.values())
    assert _dirty(tenant.pk, days) == set()


def test_counts_of_a_tenant_that_no_longer_exists_are_dropped_not_a_crash(tenant_db):
    day = date(2005, 1, 1)
    usage_count(tenant_id=987_654_321, jobs=1, at=_at(day))
    result = usage_rollup()
    assert result.dropped >= 1
    assert _dirty(987_654_321, [day]) == set()


def test_metering_off_counts_nothing(tenant_db, settings: Any):
    day = date(2005, 2, 2)
    _clear(tenant_db.acme.pk, [day])
    settings.BILLING_METERING = False
    usage_count(tenant_id=tenant_db.acme.pk, jobs=5, at=_at(day))
    assert not state_redis().exists(day_key(tenant_db.acme.pk, day))


def test_a_member_read_twice_in_one_batch_is_rolled_up_once(tenant_db, monkeypatch):
    """SSCAN may return a member twice (the roll-up's own SREMs shrink the set mid-scan); the
    same row twice in one upsert is an error in PostgreSQL, so a batch holds it once."""
    from billing import rollup

    tenant = tenant_db.acme
    day = date(2006, 7, 8)
    _clear(tenant.pk, [day])
    usage_count(tenant_id=tenant.pk, jobs=4, at=_at(day))
    member = f"{tenant.pk}:{day.isoformat()}"
    real = state_redis().sscan_iter

    def twice(key: str, count: int | None = None) -> Any:
        for raw in real(key, count=count):
            yield raw
            yield raw

    monkeypatch.setattr(state_redis(), "sscan_iter", twice)
    rollup.usage_rollup(batch_size=50)
    assert UsageDay.objects.get(tenant=tenant, day=day).jobs == 4
    assert member not in _dirty(tenant.pk, [day])


def test_an_attempts_count_and_its_slot_release_are_one_command(tenant_db, settings):
    """The runner's end of an attempt: counters and the concurrency slot's release together, and
    the slot is released with metering off too (a benchmark's baseline)."""
    tenant = tenant_db.acme
    day = date(2007, 3, 9)
    _clear(tenant.pk, [day])
    slots = f"{day_key(tenant.pk, day)}:test-slots"
    client = state_redis()
    client.sadd(slots, "task-a", "task-b")
    try:
        usage_count(
            tenant_id=tenant.pk,
            attempts=1,
            run_seconds=0.0125,
            failed=True,
            at=_at(day),
            set_remove=(slots, "task-a"),
        )
        counts = {k.decode(): int(v) for k, v in client.hgetall(day_key(tenant.pk, day)).items()}  # type: ignore[union-attr]
        assert counts == {"attempts": 1, "run_ms": 12, "seq": 1}
        assert client.smembers(slots) == {b"task-b"}
        assert _dirty(tenant.pk, [day]) == {f"{tenant.pk}:{day.isoformat()}"}
        settings.BILLING_METERING = False
        usage_count(tenant_id=tenant.pk, attempts=1, at=_at(day), set_remove=(slots, "task-b"))
        assert not client.exists(slots)
        assert int(client.hget(day_key(tenant.pk, day), "seq")) == 1  # type: ignore[arg-type]
    finally:
        client.delete(slots)
        _clear(tenant.pk, [day])
