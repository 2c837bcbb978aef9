"""When schedules fire (jobs.schedules.timing), with a controlled clock: DST in Europe/Berlin,
interval grids, jitter. The beat and the API's preview both use these functions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobs.schedules.timing import Timing, jitter_offset, latest_until, next_after, upcoming

BERLIN = ZoneInfo("Europe/Berlin")
# 2026: clocks go forward on Sunday 29 March at 02:00 CET, back on Sunday 25 October at 03:00 CEST.
SPRING_EVE = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
AUTUMN_EVE = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)


def _local(times: list[datetime]) -> list[str]:
    return [t.astimezone(BERLIN).isoformat() for t in times]


def test_a_daily_0230_runs_at_the_first_valid_instant_on_the_spring_forward_day():
    daily = Timing(tz="Europe/Berlin", cron="30 2 * * *")
    assert _local(upcoming(daily, SPRING_EVE, 3)) == [
        # 02:30 does not exist on the 29th: the clocks jump from 02:00 to 03:00, and it runs then.
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_daily_0230_runs_once_at_its_first_occurrence_on_the_fall_back_day():
    daily = Timing(tz="Europe/Berlin", cron="30 2 * * *")
    assert _local(upcoming(daily, AUTUMN_EVE, 3)) == [
        # 02:30 happens twice on the 25th: it runs at the first, in summer time, only.
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # Even asked from between the two 02:30s, the second is not a run.
    between = datetime(2026, 10, 25, 0, 45, tzinfo=UTC)  # 02:45 CEST, before 02:00 CET again
    assert _local([next_after(daily, between)]) == ["2026-10-26T02:30:00+01:00"]


def test_an_hourly_schedule_across_both_changes():
    hourly = Timing(tz="Europe/Berlin", cron="0 * * * *")
    spring = upcoming(hourly, datetime(2026, 3, 28, 23, 30, tzinfo=UTC), 4)
    # 02:00 CET does not exist: that run is at 03:00 CEST, the same instant as the 03:00 run,
    # which therefore runs once. Every run is one real hour apart.
    assert _local(spring) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
        "2026-03-29T05:00:00+02:00",
    ]
    assert {b - a for a, b in itertools.pairwise(spring)} == {timedelta(hours=1)}
    autumn = upcoming(hourly, datetime(2026, 10, 24, 22, 30, tzinfo=UTC), 4)
    # 02:00 occurs twice: it runs at the first; the hour between the two is a two-hour gap.
    assert _local(autumn) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]
    assert [b - a for a, b in itertools.pairwise(autumn)] == [
        timedelta(hours=1), timedelta(hours=2), timedelta(hours=1),
    ]  # fmt: skip


def test_an_interval_schedule_keeps_its_grid_through_dst():
    anchor = datetime(2026, 3, 29, 0, 0, 7, tzinfo=UTC)
    every = Timing(tz="Europe/Berlin", interval_seconds=3600, anchor=anchor)
    runs = upcoming(every, anchor, 3)
    assert runs == [anchor + timedelta(hours=n) for n in (1, 2, 3)]
    # Two beats asking at different moments agree on the due times (the occurrence key).
    assert next_after(every, anchor + timedelta(minutes=90)) == runs[1]
    assert latest_until(every, runs[0], anchor + timedelta(hours=3, minutes=5)) == runs[2]


@pytest.mark.parametrize("schedule_id", [1, 2, 3, 42, 10_001])
def test_jitter_is_bounded_deterministic_and_never_reaches_the_next_occurrence(schedule_id):
    due = datetime(2026, 1, 1, tzinfo=UTC)
    following = due + timedelta(seconds=10)
    offset = jitter_offset(schedule_id, 30, due, following)
    assert timedelta(0) <= offset < following - due
    assert offset == jitter_offset(schedule_id, 30, due, following)
    assert timedelta(0) <= jitter_offset(schedule_id, 5, due, following) < timedelta(seconds=5)
    assert jitter_offset(schedule_id, 0, due, following) == timedelta(0)


def test_jitter_differs_between_schedules():
    due = datetime(2026, 1, 1, tzinfo=UTC)
    offsets = {jitter_offset(n, 60, due, None) for n in range(1, 21)}
    assert len(offsets) > 15
