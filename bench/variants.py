"""Suggested worker changes, measured: the tenant path with bench.variant_settings applied.

Not part of `python -m bench`. The product's workers all consume the product's one queue (the
job type's), so only one product worker runs at a time here: each measurement starts its worker,
warms it up, runs N jobs and stops it; the order rotates every round. The tuned baseline runs the
same way for reference.

Run: `python -m bench.variants [--jobs N] [--rounds R] [--variants a,b;a,b,c]`.
"""

from __future__ import annotations

import argparse
import time

from bench.harness import bench_environment, env_int, machine_summary, median, table
from bench.throughput import (
    WARMUP_JOBS,
    BaselineScenario,
    ProductScenario,
    Scenario,
    ScenarioResult,
    baseline_database_create,
    own_pids,
    product_tenant,
)

DEFAULT_VARIANTS = "limit-set;limit-set,no-health-check;limit-set,no-health-check,async-commit"


def run(jobs: int, rounds: int, variants: list[str]) -> list[ScenarioResult]:
    with bench_environment() as env:
        tenant = product_tenant()
        scenarios: list[Scenario] = [
            BaselineScenario(env, baseline_database_create(env, "baseline-tuned"), reuse=True),
            ProductScenario(env, tenant),
            *(ProductScenario(env, tenant, variant=v) for v in variants),
        ]
        try:
            next_arg = 0
            for n in range(rounds):
                order = scenarios[n % len(scenarios) :] + scenarios[: n % len(scenarios)]
                for scenario in order:
                    with scenario.worker:
                        scenario.run_round(WARMUP_JOBS, next_arg)
                        time.sleep(0.5)
                        measured = scenario.run_round(
                            jobs, next_arg + WARMUP_JOBS, lambda: own_pids(env, scenarios)
                        )
                    next_arg += WARMUP_JOBS + jobs
                    scenario.result.rounds.append(measured)
                    print(
                        f"round {n + 1}/{rounds} {scenario.key:50} {measured.rate:6.0f} jobs/s "
                        f"CPU ms/job: worker {measured.worker_cpu_ms_per_job:.2f} "
                        f"postgres {measured.postgres_cpu_ms_per_job:.2f} "
                        f"redis {measured.redis_cpu_ms_per_job:.2f} "
                        f"submit {measured.submit_cpu_ms_per_job:.2f} "
                        f"(others' CPU {measured.others_cpu:.0%})",
                        flush=True,
                    )
        finally:
            for scenario in scenarios:
                scenario.close()
        return [s.result for s in scenarios]


def variants_table(results: list[ScenarioResult], jobs: int) -> str:
    tuned = results[0]
    rows = [
        (
            r.key,
            f"{r.rate:.0f}",
            " / ".join(f"{x.rate:.0f}" for x in r.rounds),
            " / ".join(f"{x.others_cpu:.0%}" for x in r.rounds),
            f"{r.rate / tuned.rate:.0%}",
            # Each round's ratio to the baseline of the same round, then their median: rates on
            # a shared machine drift by 2x within minutes, a round's neighbours much less.
            f"{median([x.rate / t.rate for x, t in zip(r.rounds, tuned.rounds, strict=True)]):.0%}",
            f"{r.worker_cpu_ms_per_job:.2f}",
        )
        for r in results
    ]
    return table(
        f"Worker variants: {jobs} demo.add jobs per measurement, medians",
        rows,
        header=(
            "scenario",
            "jobs/s",
            "per round",
            "others' CPU",
            "of tuned",
            "of tuned per round",
            "worker CPU ms/job",
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=env_int("BENCH_JOBS", 2000))
    parser.add_argument("--rounds", type=int, default=env_int("BENCH_ROUNDS", 2))
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="variants separated by ';', each a comma-separated list of changes",
    )
    args = parser.parse_args()
    variants = [v for v in args.variants.split(";") if v]
    results = run(args.jobs, args.rounds, variants)
    print()
    print(machine_summary())
    print(variants_table(results, args.jobs))


if __name__ == "__main__":
    main()
