"""Jobs under a worker SIGKILLed every 10 s: how many are lost, how many had a visible effect
twice, and what the kills cost in total time against the same run without them.

Two prefork -c 2 workers (heartbeat 1 s, reconcile pass 1 s) run `http.request` jobs against a
counting HTTP server in this process, so an effect is a request it saw. With faults, every
KILL_EVERY seconds one worker in turn is killed whole (main process and pool children, SIGKILL)
and started again under its name; its jobs come back through the reconciler. Counted at the end:
- lost: jobs not succeeded (goal 0);
- duplicate effects: jobs whose URL the server saw more than once. A kill between the request
  and the recording of its end makes the next attempt send it again (at-least-once, once per
  attempt); those are reported apart from duplicates no lost attempt explains (goal 0);
- jobs with more than one succeeded attempt (goal 0).

`python -m bench.faults [--jobs N]` (default 10,000; BENCH_FAULT_JOBS). The run prints its scale.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time
from typing import Any

import psutil
from psycopg import sql

from bench.harness import BenchEnv, Worker, bench_environment, env_int, machine_summary, table
from bench.throughput import product_tenant
from tests.http_server import LocalServer

KILL_EVERY = 10.0
SUBMIT_BATCH = 500
FAST = {
    "WORKER_HEARTBEAT_SECONDS": "1",
    "JOBS_RECONCILE_SECONDS": "1",
    "OUTBOUND_HTTP_ALLOW_PRIVATE": "true",
}


def _kill_whole(worker: Worker) -> None:
    parent = psutil.Process(worker.pid)
    for process in [*parent.children(recursive=True), parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert worker.process is not None
    worker.process.wait(10)


def _submit(tenant: Any, target: LocalServer, run: str, jobs: int) -> None:
    from jobs.services.submission import JobRequest, job_submit_many

    with tenant:
        for start in range(0, jobs, SUBMIT_BATCH):
            job_submit_many(
                requests=[
                    JobRequest(
                        type="http.request",
                        args={
                            "method": "GET",
                            "url": target.url(f"/flaky?key={run}-{n}&failures=0"),
                        },
                    )
                    for n in range(start, min(jobs, start + SUBMIT_BATCH))
                ],
                submitted_by=f"bench:{run}",
            )


def _counts(env: BenchEnv, tenant: Any, run: str) -> dict[str, int]:
    import psycopg

    schema = sql.Identifier(tenant.schema_name)
    with psycopg.connect(env.database_url(env.product_database), autocommit=True) as conn:
        statuses = dict(
            conn.execute(
                sql.SQL(
                    "SELECT status, count(*) FROM {}.jobs_job WHERE submitted_by = %s GROUP BY 1"
                ).format(schema),
                [f"bench:{run}"],
            ).fetchall()
        )
        twice = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM (SELECT a.job_id FROM {}.jobs_jobattempt a"
                " JOIN {}.jobs_job j ON j.id = a.job_id WHERE j.submitted_by = %s"
                " AND a.outcome = 'succeeded' GROUP BY a.job_id HAVING count(*) > 1) t"
            ).format(schema, schema),
            [f"bench:{run}"],
        ).fetchone()
        lost_attempts = conn.execute(
            sql.SQL(
                "SELECT count(DISTINCT a.job_id) FROM {}.jobs_jobattempt a"
                " JOIN {}.jobs_job j ON j.id = a.job_id WHERE j.submitted_by = %s"
                " AND a.outcome = 'lost'"
            ).format(schema, schema),
            [f"bench:{run}"],
        ).fetchone()
    return {
        **{str(k): int(v) for k, v in statuses.items()},
        "_succeeded_twice": int(twice[0]) if twice else 0,
        "_with_lost_attempt": int(lost_attempts[0]) if lost_attempts else 0,
    }


def one_run(
    env: BenchEnv, tenant: Any, *, jobs: int, faults: bool, timeout: float
) -> dict[str, Any]:
    run = f"{'faults' if faults else 'clean'}-{int(time.time())}"
    worker_env = {**env.product_environment(), **FAST}
    kills = 0
    with LocalServer() as target, contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(Worker(label=f"{run}-{n}", app="saas_platform", env=worker_env,
                                       workdir=env.workdir))
            for n in range(2)
        ]  # fmt: skip
        started = time.perf_counter()
        _submit(tenant, target, run, jobs)
        submitted = time.perf_counter() - started
        next_kill = time.perf_counter() + KILL_EVERY
        turn = itertools.cycle(range(2))
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            counts = _counts(env, tenant, run)
            if counts.get("succeeded", 0) + counts.get("failed", 0) >= jobs:
                break
            if faults and time.perf_counter() >= next_kill:
                victim = next(turn)
                _kill_whole(workers[victim])
                workers[victim] = stack.enter_context(
                    Worker(label=f"{run}-{victim}", app="saas_platform", env=worker_env,
                           workdir=env.workdir)
                )  # fmt: skip
                kills += 1
                next_kill = time.perf_counter() + KILL_EVERY
            time.sleep(0.5)
        total = time.perf_counter() - started
        counts = _counts(env, tenant, run)
        seen = {key: n for key, n in target.counters.items() if key.startswith(f"{run}-")}
    repeated = sum(1 for n in seen.values() if n > 1)
    return {
        "run": run,
        "jobs": jobs,
        "kills": kills,
        "submit_s": submitted,
        "total_s": total,
        "succeeded": counts.get("succeeded", 0),
        "lost": jobs - counts.get("succeeded", 0),
        "requested_twice": repeated,
        "with_lost_attempt": counts["_with_lost_attempt"],
        "succeeded_twice": counts["_succeeded_twice"],
        "never_requested": jobs - len(seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=env_int("BENCH_FAULT_JOBS", 10_000))
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    print(f"scale: {args.jobs} http.request jobs a run, 2 workers prefork -c 2, "
          f"one SIGKILLed every {KILL_EVERY:.0f} s in the faults run", flush=True)  # fmt: skip
    with bench_environment() as env:
        tenant = product_tenant()
        results = []
        for faults in (False, True):
            result = one_run(env, tenant, jobs=args.jobs, faults=faults, timeout=args.timeout)
            print(result, flush=True)
            results.append(result)
    clean, faulty = results
    rows = [
        (
            "without faults" if r is clean else "worker SIGKILLed every 10 s",
            str(r["kills"]), f"{r['total_s']:.0f}", f"{r['jobs'] / r['total_s']:.0f}",
            str(r["lost"]), str(r["succeeded_twice"]),
            f"{r['requested_twice']} ({r['with_lost_attempt']} jobs had a lost attempt)",
        )
        for r in results
    ]  # fmt: skip
    rows.append(("time with faults / without", "", f"{faulty['total_s'] / clean['total_s']:.2f}x",
                 "", "goal 0", "goal 0", ""))  # fmt: skip
    print()
    print(machine_summary())
    print(
        table(
            f"Faults: {args.jobs} http.request jobs per run against a counting server",
            rows,
            header=(
                "run",
                "kills",
                "total s",
                "jobs/s",
                "lost",
                "succeeded twice",
                "requested twice",
            ),
        )
    )


if __name__ == "__main__":
    main()
