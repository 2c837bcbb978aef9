"""What Sentry, Prometheus metrics and JSON log lines cost end to end (goal: under 3 %).

The product's tenant path (bench.throughput's ProductScenario: job_submit_many, a prefork -c 2
worker, demo.add) twice, one worker at a time, rounds alternating so that the machine's drift
hits both alike:
- `off`: the worker without metrics (bench.variant_settings `no-observability`), plain logs,
  no Sentry;
- `metrics+json`: metrics and LOG_FORMAT=json, no Sentry (what Sentry's share is);
- `on`: as deployed: metrics, LOG_FORMAT=json, SENTRY_DSN pointing at a local envelope sink in
  this process (the real SDK; successful jobs send nothing, but every task runs inside the Celery
  integration's scope, and its queries and Redis commands are recorded as breadcrumbs).

`python -m bench.observability_overhead [--jobs N] [--rounds N]`
"""

from __future__ import annotations

import time

from bench.harness import bench_environment, machine_summary, median, table
from bench.throughput import ProductScenario, arguments, product_tenant
from tests.sentry_sink import SentrySink

WARMUP_JOBS = 200


def main() -> None:
    args = arguments("Overhead of Sentry + metrics + JSON logs on throughput.", rounds=3)
    modes = ["off", "metrics+json", "on"]
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    with SentrySink() as sink, bench_environment() as env:
        tenant = product_tenant()
        next_arg = 0
        for n in range(args.rounds):
            order = modes if n % 2 == 0 else modes[::-1]
            for mode in order:
                scenario = ProductScenario(
                    env, tenant, variant="no-observability" if mode == "off" else ""
                )
                if mode != "off":
                    scenario.worker.env.update(LOG_FORMAT="json")
                if mode == "on":
                    scenario.worker.env.update(SENTRY_DSN=sink.dsn, SENTRY_ENVIRONMENT="bench")
                try:
                    with scenario.worker:
                        scenario.run_round(WARMUP_JOBS, next_arg)
                        next_arg += WARMUP_JOBS
                        time.sleep(0.5)
                        measured = scenario.run_round(args.jobs, next_arg)
                        next_arg += args.jobs
                finally:
                    scenario.close()
                rates[mode].append(measured.rate)
                cpu[mode].append(measured.worker_cpu_ms_per_job)
                print(
                    f"round {n + 1}/{args.rounds} {mode:12} {measured.rate:6.0f} jobs/s, "
                    f"worker CPU {measured.worker_cpu_ms_per_job:.2f} ms/job",
                    flush=True,
                )
        events = len(sink.events())
    labels = {
        "off": "off (no metrics, plain logs, no Sentry)",
        "metrics+json": "metrics and JSON logs, no Sentry",
        "on": "on (metrics, JSON logs, Sentry)",
    }
    rows = [
        (labels[mode], f"{median(rates[mode]):.0f}",
         " / ".join(f"{r:.0f}" for r in rates[mode]), f"{median(cpu[mode]):.2f}")
        for mode in modes
    ]  # fmt: skip
    off = median(rates["off"])
    for mode in modes[1:]:
        extra_cpu = median(cpu[mode]) - median(cpu["off"])
        rows.append(
            (f"overhead of {mode} (1 - it/off, medians)", f"{1 - median(rates[mode]) / off:.1%}",
             "goal < 3%" if mode == "on" else "", f"{extra_cpu:+.2f}")
        )  # fmt: skip
    print()
    print(machine_summary())
    print(
        table(
            f"Observability overhead: {args.jobs} demo.add jobs a round, {args.rounds} rounds, "
            f"prefork -c 2; Sentry events received: {events}",
            rows,
            header=("worker", "jobs/s", "per round", "worker CPU ms/job"),
        )
    )


if __name__ == "__main__":
    main()
