"""Workflows on a real product worker (`-P prefork -c 2`): how long a chain waits between two
steps, and what chaining costs in throughput.

1. Step-to-step latency on an idle system: three-step demo.add chains submitted one at a time,
   each after the previous one ended; for steps two and three, the next step's start
   (its claim) minus the previous step's end (the transaction that recorded its success and
   made the next step's job). Goal: p99 under 50 ms. Baseline, in the same run: a single job's
   time from submission to start, alone on the same worker.
2. Throughput: 1,000 three-step chains against 3,000 single demo.add jobs, the same number of
   jobs, in the same run. Each round submits its work with no worker running, then starts one
   on them, so submission (one request per chain, one
   batch per 1,000 single jobs) is not part of the figure; nor is the worker's start-up: the
   time is from the first job's start to the last one's end. Rounds alternate chains and singles,
   each with a tenant of its own, and the medians are compared. Goal: chains / singles >= 0.9.
   Single jobs' rows are all written before the clock starts, while a chain's later steps are
   written by the worker as it goes (in the transaction of the step before): that work is part
   of what chaining costs, and it is counted.

Part of `python -m bench` (`make bench`), at scale 1. Run alone: `python -m bench.workflows
[--scale S] [--rounds N]` (S < 1 for a quicker, smaller run; the scale is printed with the
figures). Stdout holds the figures; progress goes to stderr, the workers' logs to files.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.fairness import _tenant
from bench.harness import (
    BenchEnv,
    OthersCpu,
    Worker,
    bench_environment,
    machine_summary,
    percentile,
    table,
)

STEPS = [
    {"type": "demo.add", "args": {"x": 1, "y": 1}},
    {"type": "demo.add", "args": {"y": 1}},
    {"type": "demo.add", "args": {"y": 1}},
]


@dataclass(frozen=True)
class Figures:
    scale: float
    gaps_ms: list[float]
    single_wait_ms: list[float]
    chains: int
    chain_seconds: list[float]
    single_seconds: list[float]
    others_cpu: float

    @property
    def ratio(self) -> float:
        # Same number of jobs on both sides: the throughput ratio is the inverse time ratio.
        return statistics.median(self.single_seconds) / statistics.median(self.chain_seconds)


def _worker(env: BenchEnv, label: str) -> Worker:
    # Reports every second: the dispatcher sends to a queue once a live worker has reported.
    return Worker(
        label=label,
        app="saas_platform",
        env={**env.product_environment(), "WORKER_HEARTBEAT_SECONDS": "1"},
        workdir=env.workdir,
    )


def _submit_chains(tenant: Any, count: int) -> list[Any]:
    from jobs.services.workflows import StepRequest, workflow_submit

    steps = [StepRequest(type=s["type"], args=s["args"]) for s in STEPS]
    with tenant:
        return [workflow_submit(steps=steps, submitted_by="operator") for _ in range(count)]


def _submit_singles(tenant: Any, count: int) -> None:
    from jobs.services.submission import JobRequest, job_submit_many

    with tenant:
        for start in range(0, count, 1000):
            job_submit_many(
                requests=[
                    JobRequest(type="demo.add", args={"x": n, "y": 1})
                    for n in range(start, min(count, start + 1000))
                ],
                submitted_by="operator",
            )


def _span(tenant: Any) -> tuple[int, float]:
    """How many of the tenant's jobs succeeded, and the seconds from the first one's start to the
    last one's end: the time the worker spent on them, whatever its start-up took."""
    from django.db.models import Count, Max, Min

    from jobs.models import Job, JobStatus

    with tenant:
        row = Job.objects.filter(status=JobStatus.SUCCEEDED).aggregate(
            n=Count("id"), first=Min("started_at"), last=Max("finished_at")
        )
    if not row["n"]:
        return 0, 0.0
    return row["n"], (row["last"] - row["first"]).total_seconds()


def _drain(env: BenchEnv, tenant: Any, jobs: int, label: str) -> float:
    """Start a worker on the waiting work; seconds from the first job's start to the last's end."""
    with _worker(env, label):
        deadline = time.monotonic() + 1800
        while True:
            done, seconds = _span(tenant)
            if done >= jobs:
                return seconds
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: {done} of {jobs} jobs done")
            time.sleep(0.2)


def _wait_ended(tenant: Any, **filters: Any) -> list[Any]:
    from jobs.models import Job

    deadline = time.monotonic() + 60
    while True:
        with tenant:
            jobs = list(Job.objects.filter(**filters).order_by("position"))
        if jobs and all(job.finished_at is not None for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs {filters} did not finish")
        time.sleep(0.02)


def measure_gaps(env: BenchEnv, chains: int) -> tuple[list[float], list[float]]:
    """Step-to-step gaps of chains, and, as the baseline, single jobs' time from submission to
    start (the dispatcher's wake-up and the broker's hop, which every step also takes)."""
    from jobs.services.submission import JobRequest, job_submit

    tenant = _tenant("wflatency")
    gaps: list[float] = []
    singles: list[float] = []
    with _worker(env, "latency"):
        for _ in range(chains):
            [workflow] = _submit_chains(tenant, 1)
            jobs = _wait_ended(tenant, workflow=workflow)
            while len(jobs) < 3:
                jobs = _wait_ended(tenant, workflow=workflow)
            for previous, following in itertools.pairwise(jobs):
                gaps.append((following.started_at - previous.finished_at).total_seconds() * 1000)
            with tenant:
                job = job_submit(
                    request=JobRequest(type="demo.add", args={"x": 1, "y": 1}),
                    submitted_by="operator",
                )
            [ended] = _wait_ended(tenant, id=job.id)
            singles.append((ended.started_at - ended.queued_at).total_seconds() * 1000)
    return gaps, singles


def measure_throughput(env: BenchEnv, chains: int, rounds: int) -> tuple[list[float], list[float]]:
    chain_s: list[float] = []
    single_s: list[float] = []
    for n in range(rounds):
        tenant = _tenant(f"wfchains{n}")
        _submit_chains(tenant, chains)
        chain_s.append(_drain(env, tenant, 3 * chains, f"chains{n}"))
        tenant = _tenant(f"wfsingles{n}")
        _submit_singles(tenant, 3 * chains)
        single_s.append(_drain(env, tenant, 3 * chains, f"singles{n}"))
        # Progress, not a figure: stderr, so that stdout holds the tables alone.
        print(
            f"round {n + 1}: {chains} chains {chain_s[-1]:.1f}s, "
            f"{3 * chains} single jobs {single_s[-1]:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    return chain_s, single_s


def run(scale: float, rounds: int) -> Figures:
    chains = max(10, int(1000 * scale))
    with bench_environment() as env:
        others = OthersCpu()
        gaps, singles = measure_gaps(env, max(20, int(200 * scale)))
        chain_s, single_s = measure_throughput(env, chains, rounds)
        return Figures(
            scale=scale,
            gaps_ms=gaps,
            single_wait_ms=singles,
            chains=chains,
            chain_seconds=chain_s,
            single_seconds=single_s,
            others_cpu=others.share({os.getpid()} | env.session_pids()),
        )


def _row(label: str, values: list[float]) -> tuple[str, ...]:
    return (
        label,
        str(len(values)),
        f"{percentile(values, 0.5):.1f}",
        f"{percentile(values, 0.99):.1f}",
        f"{max(values):.1f}",
    )


def workflow_tables(figures: Figures) -> str:
    gaps = figures.gaps_ms
    latency = table(
        "Step-to-step latency, idle system (previous step's end to the next step's start; goal: "
        "p99 under 50 ms)",
        [
            _row("step to step, ms", gaps),
            _row("baseline: a single job, submission to start, ms", figures.single_wait_ms),
        ],
        header=("", "n", "p50", "p99", "max"),
    )
    chains, jobs = figures.chains, 3 * figures.chains
    chain_s = statistics.median(figures.chain_seconds)
    single_s = statistics.median(figures.single_seconds)
    throughput = table(
        f"Throughput at scale {figures.scale:g}, medians of {len(figures.chain_seconds)} "
        f"alternating rounds (other processes used {figures.others_cpu:.0%} of the cores)",
        [
            (f"{chains} three-step chains", f"{chain_s:.1f} s", f"{jobs / chain_s:.0f}"),
            (f"{jobs} single jobs", f"{single_s:.1f} s", f"{jobs / single_s:.0f}"),
            ("chains / singles (goal >= 0.9)", f"{figures.ratio:.3f}", ""),
        ],
        header=("", "time", "jobs/s"),
    )
    return "\n\n".join([latency, throughput])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures = run(args.scale, args.rounds)
    print()
    print(machine_summary())
    print(workflow_tables(figures))


if __name__ == "__main__":
    main()
