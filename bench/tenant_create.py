"""Tenant creation time (tenants.services.tenant_create), on a fresh database.

- The first call builds the template schema (a full tenant migrate) and then clones it: timed as
  a whole, with the template build timed on its own by wrapping template_ensure for that call.
- One tenant once the template exists: what a sign-up costs.
- `count` tenants one after another: the mean and the tail, and whether it slows down as the
  catalog grows (first ten against last ten).
- One tenant with an admin user: adds the password hash, which is deliberately slow.

Run alone: `python -m bench.tenant_create [--tenants N]`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    BenchEnv,
    OthersCpu,
    bench_environment,
    machine_summary,
    median,
    percentile,
    table,
)

# The loop of `count` tenants stops after this many seconds (the table says so).
DEFAULT_BUDGET_S = 150.0


@dataclass(frozen=True)
class TenantFigures:
    first_call_s: float
    template_s: float | None  # None: the template existed already (not a fresh database)
    one_s: float
    each_s: list[float]
    with_admin_s: float
    asked: int  # how many the loop was to create; len(each_s) is how many it did
    others_cpu: float  # other processes' CPU meanwhile, as a share of all cores

    @property
    def total_s(self) -> float:
        return sum(self.each_s)


def _timed(create: Callable[[], Any]) -> float:
    started = time.perf_counter()
    create()
    return time.perf_counter() - started


def run(env: BenchEnv, *, count: int, budget_s: float = DEFAULT_BUDGET_S) -> TenantFigures:
    from django.conf import settings

    import tenants.services
    from tenants.models import Tenant
    from tenants.services import tenant_create

    others = OthersCpu()
    template_name: str = getattr(settings, "TENANT_BASE_SCHEMA")  # noqa: B009  # project setting
    template_existed = Tenant.objects.filter(schema_name=template_name).exists()
    # Time the template build inside the first call without changing the product: wrap the name
    # tenant_create calls first (its second call, from provisioning, finds the template built).
    services: Any = tenants.services
    original = services.template_ensure
    template_s: list[float] = []

    def timed_template_ensure() -> Any:
        started = time.perf_counter()
        try:
            return original()
        finally:
            template_s.append(time.perf_counter() - started)

    services.template_ensure = timed_template_ensure
    try:
        first = _timed(lambda: tenant_create(slug="benchfirst", name="Bench first"))
    finally:
        services.template_ensure = original
    one = _timed(lambda: tenant_create(slug="benchone", name="Bench one"))
    each: list[float] = []
    for n in range(count):
        started = time.perf_counter()
        tenant_create(slug=f"benchn{n:04d}", name=f"Bench {n}")
        each.append(time.perf_counter() - started)
        if sum(each) > budget_s:
            # Creation slows down as schemas accumulate, and far more on a busy machine: keep
            # the whole bench within its few minutes and say so in the table.
            print(f"tenant creation: stopped after {len(each)} of {count} (budget {budget_s:.0f}s)")
            break
    with_admin = _timed(
        lambda: tenant_create(
            slug="benchadmin",
            name="Bench admin",
            admin_email="admin@bench.example",
            admin_password="bench-admin-pw-1",
        )
    )
    return TenantFigures(
        first_call_s=first,
        template_s=None if template_existed else template_s[0],
        one_s=one,
        each_s=each,
        with_admin_s=with_admin,
        asked=count,
        others_cpu=others.share({os.getpid()} | env.session_pids()),
    )


def tenant_table(figures: TenantFigures) -> str:
    count = len(figures.each_s)
    ms = [s * 1000 for s in figures.each_s]
    head, tail = ms[:10], ms[-10:]
    template = "" if figures.template_s is None else f"{figures.template_s:.2f} s"
    rows: list[tuple[str, ...]] = [
        ("first tenant_create (builds the template)", f"{figures.first_call_s:.2f} s"),
        ("  of which template build (migrate)", template or "existed"),
        ("one tenant (template exists)", f"{figures.one_s * 1000:.0f} ms"),
        (
            f"{count} tenants, one after another"
            + ("" if count == figures.asked else f" (of {figures.asked}: time budget hit)"),
            f"{figures.total_s:.2f} s",
        ),
        (
            "  per tenant mean / p50 / p95 / max",
            f"{sum(ms) / max(1, count):.0f} / {median(ms):.0f} / "
            f"{percentile(ms, 0.95):.0f} / {max(ms, default=0):.0f} ms",
        ),
        (
            "  first 10 mean / last 10 mean",
            f"{sum(head) / max(1, len(head)):.0f} / {sum(tail) / max(1, len(tail)):.0f} ms",
        ),
        (
            f"then one more, with an admin user (+ password hash), after {count + 2}",
            f"{figures.with_admin_s * 1000:.0f} ms",
        ),
    ]
    title = (
        "Tenant creation (tenants.services.tenant_create); other processes used "
        f"{figures.others_cpu:.0%} of the cores meanwhile"
    )
    return table(title, rows)


def main() -> None:
    from bench.throughput import arguments

    args = arguments("Tenant creation time.")
    with bench_environment() as env:
        figures = run(env, count=args.tenants)
        print()
        print(machine_summary())
        print(tenant_table(figures))


if __name__ == "__main__":
    main()
