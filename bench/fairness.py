"""Rate limits, fair dispatch and work conservation, measured with real worker processes.

1. Rate-limit accuracy: a tenant limited to 1/s, 10/s and 100/s (burst = one second's worth) with
   a backlog, on a worker of 1, 2 and 4 processes: completions per second over a window after the
   burst, against the limit (goal: within 5%).
2. A flood: tenant A submits 20,000 jobs, then five quiet tenants submit a job a second each:
   their time in queue (started_at - created_at) p50 / p95 / p99, against the same quiet load
   without the flood, in the same run (goal: p95 under 1 s during the flood).
3. Four tenants with equal backlogs: Jain's fairness index of their completions over a window
   (goal >= 0.99) and the worst tenant's share of its fair share (1.0 = fair; goal >= 0.95).
4. Work conservation: one tenant alone drains 20,000 jobs through the dispatcher ("on"), and the
   same jobs sent to the broker at once, as when submissions published themselves ("off"):
   off-time / on-time, medians of three alternating rounds (goal >= 0.95).
Every tenant has its own limits set by an operator override (billing.RateOverride), high except
where the figure is about a limit. Run alone: `python -m bench.fairness [--scale S]` (S < 1 for
a quicker, smaller run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    BenchEnv,
    OthersCpu,
    Worker,
    bench_environment,
    machine_summary,
    percentile,
    table,
)

HIGH = ("100000/s", 100_000)


@dataclass(frozen=True)
class RateFigure:
    limit: float
    processes: int
    achieved: float

    @property
    def accuracy(self) -> float:
        return self.achieved / self.limit


@dataclass(frozen=True)
class QueueTimes:
    label: str
    seconds: list[float]


@dataclass(frozen=True)
class Figures:
    rates: list[RateFigure]
    quiet_alone: QueueTimes
    quiet_flood: QueueTimes
    jain: float
    worst_share: float
    shares: list[int]
    drain_on_s: float
    drain_off_s: float
    others_cpu: float


def _tenant(slug: str, *, rate: tuple[str, int] = HIGH, concurrency: int = 100_000) -> Any:
    from billing.limits import limits_cache_clear
    from billing.models import RateOverride, Subscription
    from billing.services import tenant_create_on_plan

    tenant = tenant_create_on_plan(slug=slug, name=slug, plan_slug="free").tenant
    Subscription.objects.filter(tenant=tenant).update(concurrency_override=concurrency)
    RateOverride.objects.create(tenant=tenant, job_type="", rate=rate[0], burst=rate[1])
    limits_cache_clear()
    return tenant


def _submit(tenant: Any, count: int, **args: Any) -> list[Any]:
    from jobs.services.submission import JobRequest, job_submit_many

    made: list[Any] = []
    with tenant:
        for start in range(0, count, 1000):
            made += job_submit_many(
                requests=[
                    JobRequest(type="demo.add", args={"x": n, "y": 1, **args})
                    for n in range(start, min(count, start + 1000))
                ],
                submitted_by="operator",
            )
    return made


def _finished(tenant: Any) -> list[float]:
    from jobs.models import Job, JobStatus

    with tenant:
        return sorted(
            ended.timestamp()
            for ended in Job.objects.filter(status=JobStatus.SUCCEEDED).values_list(
                "finished_at", flat=True
            )
        )


def _cancel_the_rest(tenant: Any) -> None:
    from jobs.models import Job, JobStatus

    with tenant:
        Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.SCHEDULED]).update(
            status=JobStatus.CANCELLED
        )


def _wait_done(tenant: Any, count: int, timeout: float) -> float:
    """Seconds until `count` jobs of the tenant have succeeded."""
    started = time.monotonic()
    while len(_finished(tenant)) < count:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{tenant.schema_name}: not {count} done in {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - started


def _worker(env: BenchEnv, label: str, processes: int) -> Worker:
    return Worker(
        label=label,
        app="saas_platform",
        env=env.product_environment(),
        workdir=env.workdir,
        concurrency=processes,
    )


def measure_rates(env: BenchEnv, scale: float) -> list[RateFigure]:
    figures: list[RateFigure] = []
    for processes in (1, 2, 4):
        with _worker(env, f"rate{processes}", processes):
            for limit in (1, 10, 100):
                window = max(6.0, 20.0 * scale) if limit > 1 else max(10.0, 30.0 * scale)
                tenant = _tenant(f"rate{processes}x{limit}", rate=(f"{limit}/s", limit))
                _submit(tenant, int(limit * (window + 4)) + limit + 5)
                began = time.time()
                time.sleep(window + 2)
                done = [t for t in _finished(tenant) if began + 2 <= t < began + 2 + window]
                figures.append(RateFigure(limit, processes, len(done) / window))
                print(f"rate {limit}/s, {processes} processes: {len(done) / window:.2f}/s")
                _cancel_the_rest(tenant)
    return figures


def _quiet_load(quiet: list[Any], seconds: float) -> list[float]:
    """Each quiet tenant submits one job a second; returns their times in queue."""
    from jobs.models import Job

    submitted: list[tuple[Any, Any]] = []
    ticks = int(seconds)
    for _ in range(ticks):
        began = time.monotonic()
        for tenant in quiet:
            submitted.append((tenant, _submit(tenant, 1)[0].id))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
    waits: list[float] = []
    deadline = time.monotonic() + 60
    for tenant, job_id in submitted:
        with tenant:
            while True:
                job = Job.objects.get(id=job_id)
                if job.started_at is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        if job.started_at is not None:
            waits.append((job.started_at - job.created_at).total_seconds())
    return waits


def measure_flood(env: BenchEnv, scale: float) -> tuple[QueueTimes, QueueTimes]:
    quiet = [_tenant(f"quiet{n}") for n in range(5)]
    flooder = _tenant("flooder")
    seconds = max(8.0, 20.0 * scale)
    with _worker(env, "flood", 2):
        alone = _quiet_load(quiet, seconds)
        flooding = threading.Thread(target=_submit, args=(flooder, int(20_000 * scale)))
        flooding.start()
        time.sleep(3)
        during = _quiet_load(quiet, seconds)
        flooding.join()
        _cancel_the_rest(flooder)
    return QueueTimes("quiet tenants alone", alone), QueueTimes("during the flood", during)


def measure_jain(env: BenchEnv, scale: float) -> tuple[float, float, list[int]]:
    tenants = [_tenant(f"equal{n}") for n in range(4)]
    with _worker(env, "jain", 2):
        for tenant in tenants:
            _submit(tenant, int(3000 * max(scale, 0.5)), sleep_ms=2)
        began = time.time()
        time.sleep(max(8.0, 15.0 * scale) + 2)
        counts = [len([t for t in _finished(tenant) if began + 2 <= t]) for tenant in tenants]
        for tenant in tenants:
            _cancel_the_rest(tenant)
    jain = sum(counts) ** 2 / (len(counts) * sum(c * c for c in counts)) if any(counts) else 0.0
    worst = min(counts) / statistics.mean(counts) if any(counts) else 0.0
    return jain, worst, counts


def measure_drain(env: BenchEnv, scale: float, rounds: int = 3) -> tuple[float, float]:
    """Seconds for a lone tenant's jobs, from the first submit to the last success: through the
    dispatcher ("on"), and sent to the broker at once as submissions did before it ("off").

    Rounds alternate on and off, each with a tenant of its own, and the medians are compared:
    drift on a shared machine then lands on both sides.
    """
    from django.db import transaction
    from django.utils import timezone

    from jobs.models import Job
    from jobs.services.publishing import jobs_send

    count = int(20_000 * scale)
    on_s: list[float] = []
    off_s: list[float] = []
    with _worker(env, "drain", 2):
        for n in range(rounds):
            on = _tenant(f"drainon{n}")
            started = time.monotonic()
            _submit(on, count)
            _wait_done(on, count, timeout=1800)
            on_s.append(time.monotonic() - started)

            off = _tenant(f"drainoff{n}")
            started = time.monotonic()
            with off, transaction.atomic():
                jobs = _submit(off, count)
                # Marked sent before the commit, so the dispatcher never sees them waiting.
                Job.objects.filter(id__in=[job.id for job in jobs]).update(
                    published_at=timezone.now()
                )
            with off:
                for start in range(0, len(jobs), 1000):
                    jobs_send(jobs[start : start + 1000])
            _wait_done(off, count, timeout=1800)
            off_s.append(time.monotonic() - started)
            print(f"drain round {n + 1}: on {on_s[-1]:.1f}s, off {off_s[-1]:.1f}s")
    return statistics.median(on_s), statistics.median(off_s)


def run(scale: float) -> Figures:
    with bench_environment() as env:
        others = OthersCpu()
        rates = measure_rates(env, scale)
        alone, flood = measure_flood(env, scale)
        jain, worst, shares = measure_jain(env, scale)
        drain_on, drain_off = measure_drain(env, scale)
        return Figures(
            rates=rates,
            quiet_alone=alone,
            quiet_flood=flood,
            jain=jain,
            worst_share=worst,
            shares=shares,
            drain_on_s=drain_on,
            drain_off_s=drain_off,
            others_cpu=others.share({os.getpid()} | env.session_pids()),
        )


def _times(times: QueueTimes) -> tuple[str, ...]:
    values = times.seconds or [float("nan")]
    return (
        times.label,
        str(len(times.seconds)),
        f"{percentile(values, 0.5):.3f}",
        f"{percentile(values, 0.95):.3f}",
        f"{percentile(values, 0.99):.3f}",
    )


def fairness_tables(figures: Figures) -> str:
    rates = table(
        "Rate-limit accuracy: completions per second over a window after the burst (goal: "
        "within 5% of the limit)",
        [
            (
                f"{f.limit:g}/s",
                str(f.processes),
                f"{f.achieved:.2f}",
                f"{f.accuracy:.1%}",
            )
            for f in figures.rates
        ],
        header=("limit", "worker processes", "achieved /s", "achieved / limit"),
    )
    flood = table(
        "Quiet tenants' time in queue, seconds: five tenants submitting a job a second each "
        "(goal: p95 under 1 s during the flood)",
        [_times(figures.quiet_alone), _times(figures.quiet_flood)],
        header=("", "jobs", "p50", "p95", "p99"),
    )
    rest = table(
        f"Fairness and work conservation (other processes used {figures.others_cpu:.0%} of the "
        "cores meanwhile)",
        [
            ("Jain's index, 4 tenants, equal backlogs (goal >= 0.99)", f"{figures.jain:.4f}"),
            ("  completions per tenant", " / ".join(str(c) for c in figures.shares)),
            ("worst tenant's share of its fair share (goal >= 0.95)", f"{figures.worst_share:.3f}"),
            (
                "lone tenant draining its jobs through the dispatcher (median)",
                f"{figures.drain_on_s:.1f} s",
            ),
            (
                "the same jobs sent to the broker at once (no dispatcher)",
                f"{figures.drain_off_s:.1f} s",
            ),
            (
                "work conservation: without / with (goal >= 0.95)",
                f"{figures.drain_off_s / figures.drain_on_s:.3f}",
            ),
        ],
    )
    return "\n\n".join([rates, flood, rest])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    figures = run(args.scale)
    print()
    print(machine_summary())
    print(fairness_tables(figures))


if __name__ == "__main__":
    main()
