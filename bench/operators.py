"""The operator console at scale: server time of the health view and the tenant changelist
with 5,000 tenants, the usage roll-up of 5,000 tenants' day counters, and metering's cost on
end-to-end throughput against the same worker with metering off (BILLING_METERING=false).

The 5,000 tenants are rows only (Tenant, Domain, Subscription made with bulk_create, no
schemas): the pages and the roll-up read public tables and Redis only, never a tenant schema,
which is the point being measured. The throughput rounds come first and use one real tenant
(bench.throughput's load tenant), alternating metering on and off with a fresh worker each
round, so that drift on a shared machine falls on both alike.

Page times are measured in this process through Django's test client (the whole middleware
stack and template rendering, no network), median of several loads after one warm-up.

Run alone: `python -m bench.operators [--tenants N] [--jobs J] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from bench.harness import BenchEnv, bench_environment, machine_summary, median, table

PAGE_LOADS = 7


def tenants_create(count: int) -> list[int]:
    """`count` tenants as rows only, on the three plans in turn, with usage this month."""
    from django.utils import timezone

    from billing.models import Plan, Subscription, UsageMonth
    from tenants.models import Domain, Tenant

    started = time.perf_counter()
    plans = list(Plan.objects.order_by("monthly_job_quota"))
    tenants = Tenant.objects.bulk_create(
        [Tenant(schema_name=f"op{n:05d}", name=f"Operator bench {n}") for n in range(count)],
        batch_size=1000,
    )
    Domain.objects.bulk_create(
        [Domain(domain=f"{t.schema_name}.localhost", tenant=t, is_primary=True) for t in tenants],
        batch_size=1000,
    )
    Subscription.objects.bulk_create(
        [Subscription(tenant=t, plan=plans[n % len(plans)]) for n, t in enumerate(tenants)],
        batch_size=1000,
    )
    month = timezone.now().date().replace(day=1)
    UsageMonth.objects.bulk_create(
        [
            UsageMonth(tenant=t, month=month, jobs=(n * 37) % 12_000, rolled_up_at=timezone.now())
            for n, t in enumerate(tenants)
        ],
        batch_size=1000,
    )
    print(f"{count} tenant rows made in {time.perf_counter() - started:.1f}s", flush=True)
    return [t.pk for t in tenants]


def page_times(paths: list[str]) -> dict[str, list[float]]:
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_superuser("bench-operator", "op@bench.example", "bench-pw-1")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    times: dict[str, list[float]] = {}
    for path in paths:
        assert client.get(path).status_code == 200, path  # warm-up, and a check
        times[path] = []
        for _ in range(PAGE_LOADS):
            started = time.perf_counter()
            response = client.get(path)
            times[path].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
    return times


def rollup_times(tenant_ids: list[int]) -> tuple[float, float, int]:
    """Seconds to roll up one day's counters of every tenant, then a re-run with nothing new."""
    from saas_platform.lib.state_redis import state_redis

    from billing.metering import usage_count
    from billing.rollup import usage_rollup

    pipe = state_redis().pipeline(transaction=False)
    for n, tenant_id in enumerate(tenant_ids):
        count = n % 50 + 1
        usage_count(tenant_id=tenant_id, jobs=count, attempts=count, run_seconds=0.5, pipe=pipe)
    pipe.execute()
    started = time.perf_counter()
    result = usage_rollup()
    first = time.perf_counter() - started
    started = time.perf_counter()
    usage_rollup()
    again = time.perf_counter() - started
    return first, again, result.written


def metering_rounds(env: BenchEnv, *, jobs: int, rounds: int) -> dict[bool, list[float]]:
    """Jobs per second end to end, metering on and off in alternate rounds."""
    from django.conf import settings

    from bench.throughput import WARMUP_JOBS, ProductScenario, product_tenant

    tenant = product_tenant()
    rates: dict[bool, list[float]] = {True: [], False: []}
    next_arg = 0
    for n in range(rounds * 2):
        metering = n % 2 == 0
        # Both sides of the count: the submitting process (jobs) and the worker (attempts).
        settings.BILLING_METERING = metering
        scenario = ProductScenario(env, tenant)
        scenario.worker.env["BILLING_METERING"] = "true" if metering else "false"
        try:
            with scenario.worker:
                scenario.run_round(WARMUP_JOBS, next_arg)
                next_arg += WARMUP_JOBS
                measured = scenario.run_round(jobs, next_arg)
                next_arg += jobs
        finally:
            scenario.close()
        rates[metering].append(measured.rate)
        state = "on" if metering else "off"
        print(f"round {n // 2 + 1} metering {state}: {measured.rate:.0f} jobs/s", flush=True)
    settings.BILLING_METERING = True
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tenants", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # The admin's pages need the static manifest (DEBUG off): collected once for this run.
    os.environ["STATIC_ROOT"] = tempfile.mkdtemp(prefix="saas-bench-static-")
    with bench_environment() as env:
        from django.core.management import call_command

        call_command("collectstatic", interactive=False, verbosity=0)
        # Throughput first, next to the load tenant only: a worker's reconciler sweeps every
        # tenant now and then, and the schema-less rows below are not tenants it could visit.
        rates = metering_rounds(env, jobs=args.jobs, rounds=args.rounds)
        tenant_ids = tenants_create(args.tenants)
        pages = page_times(
            ["/admin/health/", "/admin/tenants/tenant/", "/admin/billing/usagemonth/"]
        )
        for path, ms in pages.items():
            print(f"GET {path}: median {median(ms):.1f} ms", flush=True)
        first, again, written = rollup_times(tenant_ids)
        print(f"roll-up of {args.tenants} tenant-days: {first:.2f} s", flush=True)
    report(args, pages=pages, rollup=(first, again, written), rates=rates)


def report(
    args: argparse.Namespace,
    *,
    pages: dict[str, list[float]],
    rollup: tuple[float, float, int],
    rates: dict[bool, list[float]],
) -> None:
    first, again, written = rollup
    page_rows = [
        (f"GET {path}", f"{median(ms):.1f} ms", f"{min(ms):.1f} ms", "200 ms")
        for path, ms in pages.items()
    ]
    rollup_rows = [
        (f"{args.tenants} tenants' day counters", f"{first:.2f} s", f"{written} rows", "10 s"),
        ("again, nothing new", f"{again:.2f} s", "", ""),
    ]
    on, off = median(rates[True]), median(rates[False])
    every = rates[True] + rates[False]
    spread = statistics.pstdev(every) / median(every)
    metering_rows = [
        ("metering on", f"{on:.0f} jobs/s", ""),
        ("metering off", f"{off:.0f} jobs/s", ""),
        ("overhead (off - on) / off", f"{(off - on) / off:.1%}", "goal: under 3%"),
        ("spread of all rounds (stdev / median)", f"{spread:.0%}", ""),
    ]
    print()
    print(f"== bench.operators: {machine_summary()} ==")
    title = f"Admin pages, {args.tenants} tenants: server time over {PAGE_LOADS} loads"
    print(table(title, page_rows, header=("page", "median", "best", "goal")))
    print()
    print(table("Usage roll-up", rollup_rows, header=("run", "time", "written", "goal")))
    print()
    title = f"Metering overhead: {args.jobs} demo.add jobs a round, {args.rounds} rounds each"
    print(table(title, metering_rows, header=("worker", "median", "")))


if __name__ == "__main__":
    main()
