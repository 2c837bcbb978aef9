"""CPU a short job costs in the process that runs it, observability off and on as in a worker.

The end-to-end rounds of bench.observability_overhead move by more than what one library adds to
a task, so this measures the task alone: `demo.add` jobs of the product's load tenant, each run
through Celery's own tracer (the function a pool child calls for a message: task_prerun, the
runner's claim and end, task_postrun) in one process, no broker or pool between, timed with
`time.process_time`. Each mode is a fresh process, modes alternating round by round, with
bench.observability_overhead's three:
- `off`: no Prometheus metrics (bench.variant_settings `no-observability`), plain log lines, no
  Sentry;
- `metrics+json`: metrics and LOG_FORMAT=json, no Sentry;
- `on`: as deployed: those and SENTRY_DSN (a local envelope sink), the SDK initialised as the
  settings do and again as a worker's main process does at worker_init
  (saas_platform.observability.celery_signals).
The log lines go to a pipe the parent reads, as a worker's go to its log.

`python -m bench.task_cpu [--jobs N] [--rounds N]` (N jobs timed per round, after a warm-up)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from bench.harness import REPO, bench_environment, machine_summary, median, table
from bench.throughput import arguments

WARMUP_JOBS = 200
MODES = ("off", "metrics+json", "on")
_CHILD_MODE = "BENCH_TASK_CPU_MODE"


def _tracer_for(task: Any) -> Any:
    import celery.app.trace
    from saas_platform.celery_app import app

    return celery.app.trace.build_tracer(
        task.name, task, loader=app.loader, hostname="bench@task-cpu", eager=False, app=app
    )


def _child(jobs: int) -> None:
    """One mode's round, in this process: prints the CPU milliseconds per job on its last line."""
    from bench.throughput import product_tenant

    overrides = {"LOG_FORMAT": "json"}
    if os.environ[_CHILD_MODE] == "off":
        overrides = {
            "DJANGO_SETTINGS_MODULE": "bench.variant_settings",
            "BENCH_VARIANT": "no-observability",
            "LOG_FORMAT": "plain",
        }
    with bench_environment(overrides=overrides):
        if os.environ.get("SENTRY_DSN"):
            from saas_platform.observability.celery_signals import sentry_for_workers

            sentry_for_workers()
        from django_tenants.utils import tenant_context
        from saas_platform.celery_app import app
        from saas_platform.lib.tenant_context import TENANT_ID_HEADER

        from jobs.models import Job, JobStatus
        from jobs.services.submission import JobRequest, job_submit_many

        tenant = product_tenant()
        with tenant_context(tenant):
            submitted = job_submit_many(
                requests=[
                    JobRequest(type="demo.add", args={"x": i, "y": 1})
                    for i in range(WARMUP_JOBS + jobs)
                ],
                submitted_by="bench:task-cpu",
            )
        app.loader.import_default_modules()
        task = app.tasks["demo.add"]
        trace = _tracer_for(task)

        def run(job: Job) -> None:
            task_id = str(job.task_id)
            request = {
                "id": task_id,
                "task": task.name,
                TENANT_ID_HEADER: tenant.pk,
                "delivery_info": {"exchange": "", "routing_key": "default", "redelivered": False},
                "hostname": "bench@task-cpu",
                "retries": 0,
                "timelimit": (None, None),
                "is_eager": False,
                "args": [str(job.id)],
                "kwargs": {},
            }
            trace(task_id, [str(job.id)], {}, request)

        for job in submitted[:WARMUP_JOBS]:
            run(job)
        started = time.process_time()
        for job in submitted[WARMUP_JOBS:]:
            run(job)
        cpu = time.process_time() - started
        with tenant_context(tenant):
            succeeded = Job.objects.filter(status=JobStatus.SUCCEEDED).count()
        if succeeded != len(submitted):
            raise SystemExit(f"only {succeeded} of {len(submitted)} jobs succeeded")
        print(f"{cpu / jobs * 1000:.4f}")


def _round(mode: str, jobs: int, servers: dict[str, str], sink_dsn: str) -> float:
    env = {**os.environ, **servers, _CHILD_MODE: mode}
    env.pop("SENTRY_DSN", None)
    if mode == "on":
        env.update(SENTRY_DSN=sink_dsn, SENTRY_ENVIRONMENT="bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench.task_cpu", "--jobs", str(jobs)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} round failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = arguments(
        "CPU per job in the process that runs it, observability off and on.", jobs=2000, rounds=5
    )
    if os.environ.get(_CHILD_MODE):
        _child(args.jobs)
        return
    from tests.sentry_sink import SentrySink

    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    with SentrySink() as sink, bench_environment() as env:
        servers = {"DATABASE_URL": env.server_url, "REDIS_URL": env.redis_url}
        for n in range(args.rounds):
            for mode in MODES if n % 2 == 0 else MODES[::-1]:
                cpu[mode].append(_round(mode, args.jobs, servers, sink.dsn))
                figure = cpu[mode][-1]
                print(f"round {n + 1}/{args.rounds} {mode:12} {figure:.3f} ms/job", flush=True)
        events = len(sink.events())
    off = median(cpu["off"])
    rows = [
        (mode, f"{median(cpu[mode]):.3f}", " / ".join(f"{v:.3f}" for v in cpu[mode]))
        for mode in MODES
    ]
    for mode in MODES[1:]:
        rows.append((f"{mode} / off (medians)", f"{median(cpu[mode]) / off:.3f}", ""))
    print()
    print(machine_summary())
    print(
        table(
            f"CPU per demo.add job through Celery's tracer, {args.jobs} jobs a round, "
            f"{args.rounds} rounds; Sentry events received: {events}",
            rows,
            header=("observability", "CPU ms/job", "per round"),
        )
    )


if __name__ == "__main__":
    main()
