"""`python -m bench` (`make bench`): every benchmark in one run, then one table of all figures.

Tenant creation runs first, on the fresh database, so that its first call really builds the
template schema; the throughput tenant is then cloned from it, next to 100 other tenants, as in
a real deployment. Memory is read from the throughput workers after their load. The API
benchmark (bench.api_submit) runs after them, on its own, then the reconciler's, the beat's and
the workflows' (bench.reconcile, bench.schedules, bench.workflows), each in a process of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import tenant_create, throughput
from bench.harness import bench_environment, machine_summary


def main() -> None:
    args = throughput.arguments("All benchmarks: throughput, tenant creation, worker memory.")
    # Before the tenant-creation benchmark, not a minute into the run.
    throughput.tsc_available()
    started = time.perf_counter()
    # bench_environment points DATABASE_URL at its own database while it runs; the API benchmark
    # makes its own from the server the caller named.
    caller_environment = dict(os.environ)
    with bench_environment() as env:
        tenants = tenant_create.run(env, count=args.tenants)
        report = throughput.run(env, jobs=args.jobs, rounds=args.rounds)
    print()
    print(f"== bench results: {machine_summary()}, {time.perf_counter() - started:.0f}s in all ==")
    print(throughput.throughput_table(report))
    print()
    print(tenant_create.tenant_table(tenants))
    print()
    print(throughput.memory_table(report))
    print()
    # The API benchmark serves its own gunicorn against its own database: a separate process.
    subprocess.run([sys.executable, "-m", "bench.api_submit"], check=False, env=caller_environment)
    # So does the reconciler's (a thousand tenants of its own).
    subprocess.run([sys.executable, "-m", "bench.reconcile"], check=False, env=caller_environment)
    # And the tenant-aware beat's (tenants and schedules of its own, a beat process).
    subprocess.run([sys.executable, "-m", "bench.schedules"], check=False, env=caller_environment)
    # And workflows' (step-to-step latency, chains against single jobs; workers of its own).
    subprocess.run([sys.executable, "-m", "bench.workflows"], check=False, env=caller_environment)


if __name__ == "__main__":
    main()
