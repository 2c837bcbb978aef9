"""The reconciler's cost per pass with many tenants of which few have unfinished work.

`count` tenants (1000 by default) on a fresh database, `active` of them (10) with a few queued
jobs each, and nothing else: one pass (jobs.maintenance.reconcile_pass) as every worker runs it,
timed and with its SQL statements counted, against a full sweep of every tenant in the same run
(what each pass did before the active-tenant set: one visit per tenant, idle or not).

Run alone: `python -m bench.reconcile [--tenants N] [--active K] [--passes P]`.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

from bench.harness import (
    OthersCpu,
    StatementCounter,
    bench_environment,
    machine_summary,
    median,
    table,
)

JOBS_PER_ACTIVE_TENANT = 5


@dataclass(frozen=True)
class PassFigures:
    label: str
    tenants_visited: int
    ms: list[float]
    statements: list[int]


def _measure(label: str, passes: int, *, full_sweep: bool) -> PassFigures:
    from django.db import connection
    from saas_platform.lib.state_redis import state_key, state_redis

    from jobs.maintenance import reconcile_pass

    ms: list[float] = []
    statements: list[int] = []
    visited = 0
    for _ in range(passes):
        if full_sweep:
            state_redis().delete(state_key("active-tenants", "swept-at"))
        # Counted by a wrapper, not CaptureQueriesContext: its log keeps the last 9,000 only.
        counter = StatementCounter()
        with connection.execute_wrapper(counter):
            started = time.perf_counter()
            report = reconcile_pass()
            ms.append((time.perf_counter() - started) * 1000)
        assert report is not None
        assert report.full_sweep == full_sweep
        visited = report.tenants
        statements.append(counter.count)
    return PassFigures(label, visited, ms, statements)


def run(*, tenants: int, active: int, passes: int) -> list[PassFigures]:
    with bench_environment():
        from jobs.services.submission import JobRequest, job_submit
        from tenants.services import tenant_create

        started = time.perf_counter()
        made = [
            tenant_create(slug=f"rec{n:05d}", name=f"Tenant {n}").tenant for n in range(tenants)
        ]
        print(f"{tenants} tenants created in {time.perf_counter() - started:.0f}s", flush=True)
        for tenant in made[:: max(1, tenants // active)][:active]:
            with tenant:
                for _ in range(JOBS_PER_ACTIVE_TENANT):
                    # Published with a broker ETA and never consumed: unfinished for the pass.
                    job_submit(
                        request=JobRequest(
                            type="demo.add", args={"x": 1, "y": 1}, delay_seconds=600
                        ),
                        submitted_by="operator",
                    )
        others = OthersCpu()
        # The first pass finds no sentinel and sweeps everything, building the set.
        _measure("warm-up", 1, full_sweep=True)
        figures = [
            _measure("active tenants only (now)", passes, full_sweep=False),
            _measure("every tenant (full sweep; before)", passes, full_sweep=True),
        ]
        print(f"other processes used {others.share({os.getpid()}):.0%} of the cores meanwhile")
        return figures


def reconcile_table(figures: list[PassFigures], *, tenants: int, active: int) -> str:
    rows = [
        (
            f.label,
            str(f.tenants_visited),
            f"{median(f.ms):.1f}",
            f"{median([float(s) for s in f.statements]):.0f}",
        )
        for f in figures
    ]
    now, before = figures
    rows.append(("before / now (ms)", "", f"{median(before.ms) / median(now.ms):.0f}x", ""))
    title = (
        f"Reconciler pass, {tenants} tenants of which {active} have unfinished work "
        f"({JOBS_PER_ACTIVE_TENANT} jobs each); medians of each pass kind"
    )
    return table(title, rows, header=("pass", "tenants visited", "ms", "SQL statements"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--active", type=int, default=10)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    figures = run(tenants=args.tenants, active=args.active, passes=args.passes)
    print()
    print(machine_summary())
    print(reconcile_table(figures, tenants=args.tenants, active=args.active))


if __name__ == "__main__":
    main()
