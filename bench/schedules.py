"""The tenant-aware beat with many tenants and schedules (issue 9's figures).

`tenants` tenants (100 by default; the issue's figure is 1,000) with `per_tenant` schedules each
(100): 1% of them every second, the rest every minute or slower (cron `* * * * *`, `*/5 * * * *`,
`0 * * * *`, intervals of 60 s to 1 h). Measured, in one run:

1. cold start: the beat's book reading every entry (jobs.schedules.beat.TenantBook.load_all), in
   this process, and in a real `celery beat` process (its own log line);
2. SQL statements per steady-state tick, apart from the occurrences it dispatches, and per
   dispatched occurrence, against the stock DatabaseScheduler's change check (one statement per
   schema per tick) measured on the same tenants;
3. a real beat process for `seconds`: its CPU and RSS, and the dispatch lag (the job's creation
   minus its due time) of every occurrence due after its start-up, p50 / p99 / max;
4. an API change to its effect: a schedule created (a one-off due now) through the service, to
   its job created by the running beat, p50 / p99.

Run alone: `python -m bench.schedules [--tenants N] [--per-tenant M] [--seconds S]`.
"""

from __future__ import annotations

import argparse
import logging
import random
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil

from bench.harness import (
    CELERY,
    REPO,
    OthersCpu,
    StatementCounter,
    bench_environment,
    machine_summary,
    median,
    percentile,
    statements_counted_everywhere,
    table,
)

FAST_SHARE = 0.01  # the issue's: 1,000 of 100,000 entries every second
SLOW_KINDS = (("cron", "* * * * *"), ("cron", "*/5 * * * *"), ("cron", "0 * * * *"),
              ("interval", 60), ("interval", 300), ("interval", 3600))  # fmt: skip


def _populate(tenants: int, per_tenant: int) -> list[Any]:
    """Tenants on the enterprise plan with their schedules, written in bulk per tenant."""
    from django.utils import timezone
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from billing.services import tenant_create_on_plan
    from jobs.models import Schedule
    from jobs.schedules.services import SCHEDULE_TASK_MARKER

    rng = random.Random(9)
    start = timezone.now()
    fast = max(1, round(per_tenant * FAST_SHARE))
    made = []
    for n in range(tenants):
        tenant = tenant_create_on_plan(
            slug=f"sch{n:05d}", name=f"Tenant {n}", plan_slug="enterprise"
        ).tenant
        made.append(tenant)
        with tenant:
            intervals = {
                every: IntervalSchedule.objects.create(every=every, period="seconds")
                for every in (1, 60, 300, 3600)
            }
            crons: dict[str, CrontabSchedule] = {}
            tasks, kinds = [], []
            for i in range(per_tenant):
                kind, value = ("interval", 1) if i < fast else SLOW_KINDS[i % len(SLOW_KINDS)]
                if kind == "cron":
                    m, h, dom, mon, dow = str(value).split()
                    if value not in crons:
                        crons[str(value)] = CrontabSchedule.objects.create(
                            minute=m, hour=h, day_of_month=dom, month_of_year=mon, day_of_week=dow
                        )
                    timing = {"crontab": crons[str(value)]}
                else:
                    timing = {"interval": intervals[int(value)]}
                tasks.append(PeriodicTask(name=f"s{i}", task=SCHEDULE_TASK_MARKER, **timing))
                kinds.append((kind, value))
            tasks = PeriodicTask.objects.bulk_create(tasks)
            Schedule.objects.bulk_create(
                Schedule(
                    periodic_task=task,
                    name=task.name,
                    type="demo.add",
                    args={"x": 1, "y": 1},
                    # Created at different moments: the 1 s schedules do not all fire at once.
                    anchor=start - timedelta(seconds=rng.random() * 3600),
                    last_due_at=start,
                )
                for task in tasks
            )
    return made


def _ticks(book: Any, ticks: int) -> tuple[list[int], list[int], list[int]]:
    """Per tick, 0.5 s apart as the beat makes them when it keeps up: statements noticing
    changes (refresh), round trips dispatching (a query string of several tenants' statements
    counts once), occurrences dispatched (a tick fires for at most
    jobs.schedules.beat.FIRE_BUDGET_SECONDS)."""
    noticing, dispatching, dispatched = [], [], []
    for _ in range(ticks):
        time.sleep(0.5)
        before = book.dispatched
        counter = StatementCounter()
        with statements_counted_everywhere(counter):
            book.refresh()
        noticing.append(counter.count)
        counter = StatementCounter()
        with statements_counted_everywhere(counter):
            book.run_due(time.time())
        dispatching.append(counter.count)
        dispatched.append(book.dispatched - before)
    return noticing, dispatching, dispatched


def _stock_change_check(tenants: list[Any]) -> tuple[int, float]:
    """django-celery-beat's own change check, run for every tenant's schema (per tick)."""
    from django.db import connection
    from django_celery_beat.models import PeriodicTasks

    counter = StatementCounter()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        for tenant in tenants:
            with tenant:
                PeriodicTasks.last_change()
    return counter.count, time.perf_counter() - started


def _beat_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [CELERY, "-A", "saas_platform", "beat", "-l", "INFO", "--pidfile=",
             "-s", str(log.with_suffix(".db"))],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _lags(tenants: list[Any], since: Any) -> list[float]:
    from django.db.models import F

    from jobs.models import ScheduleRun

    lags: list[float] = []
    for tenant in tenants:
        with tenant:
            rows = ScheduleRun.objects.filter(due_at__gte=since, job__isnull=False).annotate(
                made=F("job__created_at")
            )
            lags += [(row.made - row.due_at).total_seconds() for row in rows]
    return lags


def _change_latency(tenants: list[Any], changes: int) -> list[float]:
    from django.utils import timezone

    from jobs.models import ScheduleRun
    from jobs.schedules.services import ScheduleSpec, schedule_create

    found: list[float] = []
    for n in range(changes):
        tenant = tenants[n % len(tenants)]
        with tenant:
            schedule = schedule_create(
                spec=ScheduleSpec(
                    name=f"change {n}", type="demo.add", args={"x": 1, "y": 1},
                    run_at=timezone.now(),
                )
            )  # fmt: skip
            committed = timezone.now()
            deadline = time.monotonic() + 10
            run = None
            while run is None and time.monotonic() < deadline:
                time.sleep(0.02)
                run = ScheduleRun.objects.filter(schedule=schedule).first()
        if run is not None:
            found.append((run.created_at - committed).total_seconds())
        time.sleep(0.2)
    return found


def run(*, tenants: int, per_tenant: int, seconds: int, changes: int) -> list[tuple[str, ...]]:
    with bench_environment() as env:
        from django.utils import timezone

        from jobs.models import Schedule
        from jobs.schedules.beat import TenantBook

        started = time.perf_counter()
        made = _populate(tenants, per_tenant)
        print(
            f"{tenants} tenants x {per_tenant} schedules in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        # As if the beat had been running: nothing is owed from the time populating took.
        for tenant in made:
            with tenant:
                Schedule.objects.update(last_due_at=timezone.now())
        rows: list[tuple[str, ...]] = []
        # The in-process book's line per occurrence would flood this output (the beat process
        # below logs them, as deployed, to its own file).
        logging.getLogger("jobs.schedules.occurrences").setLevel(logging.WARNING)
        book = TenantBook(keep_connections=True)  # as the beat process holds its own
        began = time.perf_counter()
        book.load_all()
        loaded = sum(len(entries) for entries in book.entries.values())
        rows.append(("cold start, in process (s)", f"{time.perf_counter() - began:.2f}",
                     f"{loaded} entries"))  # fmt: skip
        book.run_due(time.time())  # the catch-up of the first tick
        ticked = time.perf_counter()
        noticing, dispatching, dispatched = _ticks(book, 20)
        ticked = time.perf_counter() - ticked
        book.close()
        rows.append(("SQL per tick noticing changes, median / max",
                     f"{median([float(n) for n in noticing]):.0f} / {max(noticing)}",
                     "the tenant table every 2 s, nothing else"))  # fmt: skip
        per_occurrence = sum(dispatching) / max(1, sum(dispatched))
        rows.append(("PostgreSQL round trips per dispatched occurrence", f"{per_occurrence:.3f}",
                     f"{sum(dispatching)} for {sum(dispatched)} occurrences in "
                     f"{len(dispatched)} ticks"))  # fmt: skip
        rows.append(("occurrences due and dispatched a second, in process",
                     f"{sum(dispatched) / ticked:.0f}",
                     f"{len(dispatched)} ticks in {ticked:.1f}s"))  # fmt: skip
        stock, stock_seconds = _stock_change_check(made)
        rows.append(("stock change check, SQL per tick (baseline)", str(stock),
                     f"{stock_seconds * 1000:.0f} ms per tick"))  # fmt: skip

        log = env.workdir / "beat.log"
        others = OthersCpu()
        beat = _beat_process(env.product_environment(), log)
        process = psutil.Process(beat.pid)
        t0 = timezone.now()
        try:
            deadline = time.monotonic() + 120
            while "beat loaded" not in log.read_text(errors="replace"):
                if beat.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("beat did not load:\n" + log.read_text()[-3000:])
                time.sleep(0.1)
            ready = timezone.now()
            line = next(x for x in log.read_text().splitlines() if "beat loaded" in x)
            rows.append(("cold start, beat process (s)", f"{(ready - t0).total_seconds():.2f}",
                         line.split("beat ", 1)[1]))  # fmt: skip
            cpu_before = sum(process.cpu_times()[:2])
            time.sleep(seconds)
            cpu = sum(process.cpu_times()[:2]) - cpu_before
            rss = process.memory_info().rss / 2**20
            latencies = _change_latency(made, changes)
        finally:
            beat.terminate()
            beat.wait(30)
        rows.append(("beat CPU (share of one core)", f"{cpu / seconds:.0%}", f"over {seconds}s"))
        rows.append(("beat RSS (MiB)", f"{rss:.0f}", ""))
        lags = _lags(made, ready + timedelta(seconds=2))
        worst = max(lags, default=float("nan"))
        rows.append(("dispatch lag p50 / p99 / max (s)",
                     f"{percentile(lags, 0.5):.3f} / {percentile(lags, 0.99):.3f} / {worst:.3f}",
                     f"{len(lags)} occurrences"))  # fmt: skip
        rows.append(("API change to effect p50 / p99 (s)",
                     f"{percentile(latencies, 0.5):.3f} / {percentile(latencies, 0.99):.3f}",
                     f"{len(latencies)} of {changes} changes"))  # fmt: skip
        print(f"other processes used {others.share({beat.pid}):.0%} of the cores meanwhile")
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--per-tenant", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    rows = run(
        tenants=args.tenants, per_tenant=args.per_tenant, seconds=args.seconds,
        changes=args.changes,
    )  # fmt: skip
    total = args.tenants * args.per_tenant
    fast = args.tenants * max(1, round(args.per_tenant * FAST_SHARE))
    print()
    print(machine_summary())
    print(
        table(
            f"Tenant-aware beat: {args.tenants} tenants x {args.per_tenant} schedules = {total} "
            f"entries, {fast} of them every second (the issue's scale: 1,000 x 100)",
            rows,
            header=("figure", "value", "note"),
        )
    )


if __name__ == "__main__":
    main()
