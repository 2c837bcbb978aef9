"""End-to-end throughput: the tenant path against plain Celery + django-celery-results.

Five workers run side by side on the same PostgreSQL and Redis, each `-P prefork -c 2`, each on
its own Redis key prefix (so none takes another's messages):

- baseline-default: plain Celery, Celery's defaults for the database connection (closed before
  and after every task), otherwise configured like the product (acks_late, prefetch 1, JSON,
  extended results); its own database.
- baseline-tuned: the same with CELERY_DB_REUSE_MAX, as the product sets it.
- tenant: the product. Jobs are submitted through jobs.services.submission.job_submit_many in
  batches (Job rows written, messages published on commit with the tenant header), run by the
  product worker in the tenant's schema (claim, run, Job row finished), results stored by
  django-celery-results in the tenant's schema.
- tsc-default: tenant-schemas-celery, what a user would pick instead of this product, with its
  defaults: its CeleryApp publishes with the active schema's name in a header, its TenantTask
  fetches that tenant and activates its schema per task (django-tenants), results stored by
  django-celery-results in the tenant's schema; Celery's connection handling. Its own database
  with one tenant schema (bench.tsc_settings, bench.tsc_app, bench.tsc_setup).
- tsc-cached: the same with its tenant cache on and CELERY_DB_REUSE_MAX, as the tuned baseline
  has (bench.tsc_cached_settings).

A round submits N jobs and waits until N new result rows exist; throughput is N / (time from the
first submit until the last result row is seen). The workers are started and warmed up first, and
rounds are interleaved (the order rotates each round) so that drift on a shared machine (disk
flushes, autovacuum, a noisy neighbour) is spread over all of them instead of landing on one.

Run alone: `python -m bench.throughput [--jobs N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from celery import Celery
from psycopg import sql

from bench.harness import (
    REPO,
    RUN_ID,
    BenchEnv,
    OthersCpu,
    Worker,
    WorkerMemory,
    bench_environment,
    env_int,
    machine_summary,
    median,
    redis_server_pids,
    table,
    wait_until,
)

# job_submit_many's batch: what an API client posting batches would send at once.
SUBMIT_BATCH = 100
WARMUP_JOBS = 200
# Completion is polled with a cheap index range COUNT; 20 ms is under 1% of a round's length
# at the expected rates and costs the database little.
POLL_INTERVAL = 0.02
PRODUCT_TENANT_SLUG = "benchload"
# The tenant-schemas-celery baselines' one tenant schema (in a database of each one's own).
TSC_TENANT_SCHEMA = "tscload"
DEFAULT_JOBS = 2000
DEFAULT_ROUNDS = 3


@dataclass(frozen=True)
class Round:
    jobs: int
    submit_s: float  # until the last job was handed over (to the broker, or committed+published)
    total_s: float  # until the last result row existed
    # CPU time is less sensitive than wall time to whatever else the machine is running.
    submit_cpu_s: float  # this process, while submitting
    worker_cpu_s: float  # the worker's processes, over the whole round
    # CPU used by everything else on the machine during the round, as a share of all cores.
    others_cpu: float = float("nan")
    # Where the machine's CPU went: our PostgreSQL sessions, the Redis server (shared: other
    # users of it count too), as measured by `own_pids`' caller.
    postgres_cpu_s: float = float("nan")
    redis_cpu_s: float = float("nan")

    @property
    def rate(self) -> float:
        return self.jobs / self.total_s

    @property
    def worker_cpu_ms_per_job(self) -> float:
        return self.worker_cpu_s * 1000 / self.jobs

    @property
    def submit_cpu_ms_per_job(self) -> float:
        return self.submit_cpu_s * 1000 / self.jobs

    @property
    def postgres_cpu_ms_per_job(self) -> float:
        return self.postgres_cpu_s * 1000 / self.jobs

    @property
    def redis_cpu_ms_per_job(self) -> float:
        return self.redis_cpu_s * 1000 / self.jobs


@dataclass
class ScenarioResult:
    key: str
    label: str
    rounds: list[Round] = field(default_factory=list)
    memory_warm: WorkerMemory | None = None
    memory_after: WorkerMemory | None = None
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return median([r.rate for r in self.rounds])

    @property
    def submit_s(self) -> float:
        return median([r.submit_s for r in self.rounds])

    @property
    def worker_cpu_ms_per_job(self) -> float:
        return median([r.worker_cpu_ms_per_job for r in self.rounds])

    @property
    def submit_cpu_ms_per_job(self) -> float:
        return median([r.submit_cpu_ms_per_job for r in self.rounds])


@dataclass
class ThroughputReport:
    jobs: int
    rounds: int
    scenarios: dict[str, ScenarioResult]

    def ratio(self, key: str, against: str) -> float:
        return self.scenarios[key].rate / self.scenarios[against].rate


class Scenario:
    """One worker and how to feed it jobs and count its finished ones."""

    key = ""
    label = ""

    def __init__(self, worker: Worker, database_url: str, results_table: sql.Composable) -> None:
        self.worker = worker
        self.result = ScenarioResult(key=self.key, label=self.label)
        # A connection of our own, outside Django: counting must not disturb the product's
        # connection state (search_path, tenant) in this process.
        self._db = psycopg.connect(database_url, autocommit=True)
        self._results_table = results_table
        # Our own statements, tagged and counted so that bench.queries can leave them out.
        self.bench_queries = 0

    def close(self) -> None:
        self._db.close()

    def query(
        self, query: sql.Composable, params: list[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        self.bench_queries += 1
        return self._db.execute(sql.SQL("/* bench */ ") + query, params).fetchall()

    def submit(self, count: int, first: int) -> None:
        raise NotImplementedError

    def statuses(self) -> dict[str, int]:
        raise NotImplementedError

    def _last_result_id(self) -> int:
        query = sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(self._results_table)
        return int(self.query(query)[0][0])

    def _results_after(self, last_id: int) -> int:
        # id is the primary key: an index range scan over this round's rows only.
        query = sql.SQL("SELECT count(*) FROM {} WHERE id > %s").format(self._results_table)
        return int(self.query(query, [last_id])[0][0])

    def _session_pids(self) -> set[int]:
        """The server processes of the sessions on this scenario's database, ours included."""
        query = sql.SQL("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return {int(row[0]) for row in self.query(query)}

    def run_round(
        self, count: int, first: int, own_pids: Callable[[], set[int]] | None = None
    ) -> Round:
        """Submit `count` jobs, wait for their results. `own_pids`: to measure others' CPU."""
        last_id = self._last_result_id()
        others = OthersCpu()
        worker_cpu = self.worker.cpu_seconds()
        started = time.perf_counter()
        submit_cpu = time.process_time()
        self.submit(count, first)
        submit_cpu = time.process_time() - submit_cpu
        submitted = time.perf_counter()
        sessions = self._session_pids()
        try:
            finished = wait_until(
                lambda: self._results_after(last_id) >= count,
                timeout=max(120.0, count / 20),
                interval=POLL_INTERVAL,
                what=f"{count} results from {self.key}",
            )
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n--- worker log ---\n{self.worker.log_tail()}") from None
        return Round(
            jobs=count,
            submit_s=submitted - started,
            total_s=finished - started,
            submit_cpu_s=submit_cpu,
            worker_cpu_s=self.worker.cpu_seconds() - worker_cpu,
            others_cpu=others.share(own_pids()) if own_pids else float("nan"),
            postgres_cpu_s=others.used_by(sessions | self._session_pids()),
            redis_cpu_s=others.used_by(redis_server_pids()),
        )


class BaselineScenario(Scenario):
    def __init__(self, env: BenchEnv, database_url: str, *, reuse: bool) -> None:
        self.key = "baseline-tuned" if reuse else "baseline-default"
        self.label = (
            "plain Celery, connection kept (DB_REUSE_MAX)"
            if reuse
            else "plain Celery, Celery defaults (conn closed per task)"
        )
        prefix = f"{env.key_prefix}{self.key}:"
        worker_env = _baseline_environment(env, database_url)
        worker_env.update(REDIS_KEY_PREFIX=prefix, BENCH_DB_REUSE="1" if reuse else "0")
        worker = Worker(
            label=self.key, app="bench.baseline_app", env=worker_env, workdir=env.workdir
        )
        super().__init__(worker, database_url, sql.Identifier("django_celery_results_taskresult"))
        # A publisher of its own (no Django fixup needed to send): a client of plain Celery.
        self._publisher = Celery(f"bench_publisher_{self.key}", set_as_current=False)
        self._publisher.conf.update(
            broker_url=env.redis_url,
            broker_transport_options={"global_keyprefix": prefix},
            task_serializer="json",
            accept_content=["json"],
            task_default_queue="default",
        )

    def submit(self, count: int, first: int) -> None:
        # One producer for the round, as the product's publisher uses one per batch.
        with self._publisher.producer_or_acquire() as producer:
            for n in range(first, first + count):
                self._publisher.send_task(
                    "bench.add", args=[n, 1], queue="default", producer=producer
                )

    def statuses(self) -> dict[str, int]:
        query = sql.SQL("SELECT status, count(*) FROM {} GROUP BY status").format(
            self._results_table
        )
        return {str(status): int(n) for status, n in self.query(query)}

    def close(self) -> None:
        self._publisher.close()
        super().close()


class TscScenario(Scenario):
    """tenant-schemas-celery: its CeleryApp publishing, its TenantTask in the worker."""

    def __init__(self, env: BenchEnv, database_url: str, *, cached: bool) -> None:
        self.key = "tsc-cached" if cached else "tsc-default"
        self.label = (
            "tenant-schemas-celery, tenant cache + DB_REUSE_MAX"
            if cached
            else "tenant-schemas-celery, its defaults"
        )
        prefix = f"{env.key_prefix}{self.key}:"
        worker_env = _tsc_environment(env, database_url, cached=cached)
        worker_env.update(REDIS_KEY_PREFIX=prefix)
        worker = Worker(label=self.key, app="bench.tsc_app", env=worker_env, workdir=env.workdir)
        results = sql.SQL("{}.{}").format(
            sql.Identifier(TSC_TENANT_SCHEMA), sql.Identifier("django_celery_results_taskresult")
        )
        super().__init__(worker, database_url, results)
        from tenant_schemas_celery.app import CeleryApp

        # Its own CeleryApp, so that its send_task (which adds the `_schema_name` header) is
        # what the submitting side pays for, as in a tenant-schemas-celery user's web process.
        self._publisher = CeleryApp(f"bench_publisher_{self.key}", set_as_current=False)
        self._publisher.conf.update(
            broker_url=env.redis_url,
            broker_transport_options={"global_keyprefix": prefix},
            task_serializer="json",
            accept_content=["json"],
            task_default_queue="default",
        )

    def submit(self, count: int, first: int) -> None:
        from django_tenants.utils import schema_context

        # tenant-schemas-celery reads the schema name from this process's Django connection
        # (connection.schema_name) when publishing, so the schema is activated for the round
        # as a user's view would have it. This process's connection is the product's; the name
        # is only read from it, no statement runs in it, and the product's schema comes back
        # afterwards.
        with schema_context(TSC_TENANT_SCHEMA), self._publisher.producer_or_acquire() as producer:
            for n in range(first, first + count):
                self._publisher.send_task(
                    "bench.add", args=[n, 1], queue="default", producer=producer
                )

    def statuses(self) -> dict[str, int]:
        query = sql.SQL("SELECT status, count(*) FROM {} GROUP BY status").format(
            self._results_table
        )
        return {str(status): int(n) for status, n in self.query(query)}

    def close(self) -> None:
        self._publisher.close()
        super().close()


class ProductScenario(Scenario):
    key = "tenant"
    label = "tenant path (job_submit_many + tenant worker)"

    def __init__(self, env: BenchEnv, tenant: Any, *, variant: str = "") -> None:
        self.tenant = tenant
        self.schema = sql.Identifier(tenant.schema_name)
        worker_env = env.product_environment()
        if variant:
            # The product worker with a few settings changed (bench.variant_settings): how a
            # suggested change would pay off, measured before anyone edits the product.
            self.key = f"tenant+{variant}"
            self.label = f"tenant path, worker with {variant}"
            worker_env.update(
                DJANGO_SETTINGS_MODULE="bench.variant_settings", BENCH_VARIANT=variant
            )
        worker = Worker(label=self.key, app="saas_platform", env=worker_env, workdir=env.workdir)
        results = sql.SQL("{}.{}").format(
            self.schema, sql.Identifier("django_celery_results_taskresult")
        )
        super().__init__(worker, env.database_url(env.product_database), results)

    def submit(self, count: int, first: int) -> None:
        from jobs.services.submission import JobRequest, job_submit_many

        with self.tenant:
            for start in range(first, first + count, SUBMIT_BATCH):
                stop = min(first + count, start + SUBMIT_BATCH)
                job_submit_many(
                    requests=[
                        JobRequest(type="demo.add", args={"x": n, "y": 1})
                        for n in range(start, stop)
                    ],
                    submitted_by="operator",
                )

    def statuses(self) -> dict[str, int]:
        query = sql.SQL("SELECT status, count(*) FROM {}.jobs_job GROUP BY status").format(
            self.schema
        )
        return {str(status): int(n) for status, n in self.query(query)}


def _baseline_environment(env: BenchEnv, database_url: str) -> dict[str, str]:
    worker_env = env.product_environment()
    worker_env.update(DJANGO_SETTINGS_MODULE="bench.baseline_settings", DATABASE_URL=database_url)
    return worker_env


def _tsc_environment(env: BenchEnv, database_url: str, *, cached: bool) -> dict[str, str]:
    worker_env = env.product_environment()
    worker_env.update(
        DJANGO_SETTINGS_MODULE="bench.tsc_cached_settings" if cached else "bench.tsc_settings",
        DATABASE_URL=database_url,
    )
    return worker_env


def tsc_available() -> None:
    """Stop early with the remedy when the bench extra is missing (the worker would not start)."""
    if importlib.util.find_spec("tenant_schemas_celery") is None:
        raise SystemExit(
            "tenant-schemas-celery is not installed: `make bench` installs it, or "
            "pip install -c requirements.lock -e '.[dev,bench]'"
        )


def tsc_database_create(env: BenchEnv, key: str, *, cached: bool) -> str:
    """A database of the scenario's own, migrated, with the one tenant schema in it."""
    url = env.database_create(baseline_database_name(key))
    # Another process, for the same reason as the baselines': this one's Django is the product's.
    subprocess.run(
        [sys.executable, "-m", "bench.tsc_setup", TSC_TENANT_SCHEMA],
        cwd=REPO,
        env=_tsc_environment(env, url, cached=cached),
        check=True,
    )
    return url


def baseline_database_name(key: str) -> str:
    return f"bench_{RUN_ID}_{key.replace('-', '_')}"


def baseline_database_create(env: BenchEnv, key: str) -> str:
    url = env.database_create(baseline_database_name(key))
    # Another process: this one's Django is set up with the product's settings.
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
        cwd=REPO,
        env=_baseline_environment(env, url),
        check=True,
    )
    return url


def product_tenant() -> Any:
    """The product's load tenant: enterprise, with limits an operator set high, so that the
    dispatcher's rate limits and concurrency cap are on the path but never what binds."""
    from billing.models import RateOverride, Subscription
    from billing.services import tenant_create_on_plan
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(schema_name=PRODUCT_TENANT_SLUG).first()
    if tenant is None:
        started = time.perf_counter()
        tenant = tenant_create_on_plan(
            slug=PRODUCT_TENANT_SLUG, name="Bench load", plan_slug="enterprise"
        ).tenant
        print(f"tenant {PRODUCT_TENANT_SLUG} created in {time.perf_counter() - started:.1f}s")
        Subscription.objects.filter(tenant=tenant).update(concurrency_override=100_000)
        RateOverride.objects.create(tenant=tenant, job_type="", rate="100000/s", burst=100_000)
    return tenant


def own_pids(env: BenchEnv, scenarios: list[Scenario]) -> set[int]:
    """This process, every worker process of the run, our PostgreSQL sessions."""
    pids = {os.getpid()} | env.session_pids()
    for scenario in scenarios:
        worker = scenario.worker
        if worker.process is not None and worker.process.poll() is None:
            pids.add(worker.pid)
            pids.update(worker.children())
    return pids


def run(env: BenchEnv, *, jobs: int, rounds: int) -> ThroughputReport:
    tsc_available()
    tenant = product_tenant()
    with contextlib.ExitStack() as stack:
        scenarios: list[Scenario] = [
            # A database each, like the product's tenant: tables of the same size, and the final
            # state counts below are each worker's own.
            BaselineScenario(env, baseline_database_create(env, "baseline-default"), reuse=False),
            BaselineScenario(env, baseline_database_create(env, "baseline-tuned"), reuse=True),
            ProductScenario(env, tenant),
            TscScenario(env, tsc_database_create(env, "tsc-default", cached=False), cached=False),
            TscScenario(env, tsc_database_create(env, "tsc-cached", cached=True), cached=True),
        ]
        next_arg = 0
        for scenario in scenarios:
            stack.callback(scenario.close)
            started = time.perf_counter()
            stack.enter_context(scenario.worker)
            scenario.run_round(WARMUP_JOBS, next_arg)
            next_arg += WARMUP_JOBS
            scenario.result.memory_warm = scenario.worker.memory()
            print(
                f"worker {scenario.key}: started and warmed up in "
                f"{time.perf_counter() - started:.1f}s",
                flush=True,
            )
        for n in range(rounds):
            order = scenarios[n % len(scenarios) :] + scenarios[: n % len(scenarios)]
            for scenario in order:
                # Let the previous scenario's trailing acks and writes settle first.
                time.sleep(0.5)
                measured = scenario.run_round(jobs, next_arg, lambda: own_pids(env, scenarios))
                next_arg += jobs
                scenario.result.rounds.append(measured)
                print(
                    f"round {n + 1}/{rounds} {scenario.key:17} {measured.rate:7.0f} jobs/s "
                    f"(submit {measured.submit_s:.2f}s, total {measured.total_s:.2f}s, "
                    f"worker CPU {measured.worker_cpu_ms_per_job:.2f} ms/job, "
                    f"others' CPU {measured.others_cpu:.0%})",
                    flush=True,
                )
        for scenario in scenarios:
            scenario.result.memory_after = scenario.worker.memory()
            scenario.result.statuses = scenario.statuses()
        return ThroughputReport(
            jobs=jobs, rounds=rounds, scenarios={s.key: s.result for s in scenarios}
        )


def throughput_table(report: ThroughputReport) -> str:
    rows: list[tuple[str, ...]] = []
    for result in report.scenarios.values():
        rows.append(
            (
                result.label,
                f"{result.rate:.0f}",
                " / ".join(f"{r.rate:.0f}" for r in result.rounds),
                " / ".join(f"{r.others_cpu:.0%}" for r in result.rounds),
                f"{result.submit_s:.2f}",
                f"{result.submit_cpu_ms_per_job:.2f}",
                f"{result.worker_cpu_ms_per_job:.2f}",
                " ".join(f"{k}={v}" for k, v in sorted(result.statuses.items())),
            )
        )
    tuned = report.ratio("tenant", "baseline-tuned")
    rows.append(("tenant / tuned baseline", f"{tuned:.0%}", "goal >= 90%", "", ""))
    rows.append(
        (
            "tenant / default baseline",
            f"{report.ratio('tenant', 'baseline-default'):.2f}x",
            "",
            "",
            "",
        )
    )
    rows.append(
        (
            "tuned / default baseline",
            f"{report.ratio('baseline-tuned', 'baseline-default'):.2f}x",
            "",
            "",
            "",
        )
    )
    # The goals the maintainers set against tenant-schemas-celery, the usual tenant glue.
    rows.append(
        (
            "tenant / tsc-default",
            f"{report.ratio('tenant', 'tsc-default'):.2f}x",
            "goal >= 5x",
            "",
            "",
        )
    )
    rows.append(
        (
            "tenant / tsc-cached",
            f"{report.ratio('tenant', 'tsc-cached'):.2f}x",
            "goal >= 1.0x",
            "",
            "",
        )
    )
    rows.append(
        (
            "tsc-cached / tsc-default",
            f"{report.ratio('tsc-cached', 'tsc-default'):.2f}x",
            "",
            "",
            "",
        )
    )
    return table(
        f"Throughput: {report.jobs} demo.add jobs per round, {report.rounds} rounds, "
        "prefork -c 2 workers, medians. CPU ms/job: submitting process; worker processes.\n"
        "  others' CPU: what other processes on the machine used during each round, as a share "
        "of all cores: the noise in that round's jobs/s",
        rows,
        header=(
            "scenario",
            "jobs/s",
            "per round",
            "others' CPU",
            "submit s",
            "submit CPU",
            "worker CPU",
            "final states incl. warm-up",
        ),
    )


def memory_table(report: ThroughputReport) -> str:
    rows: list[tuple[str, ...]] = []
    for result in report.scenarios.values():
        for when, memory in (("warm", result.memory_warm), ("after load", result.memory_after)):
            if memory is None:
                continue
            rows.append(
                (
                    f"{result.key} ({when})",
                    " / ".join(f"{v:.1f}" for v in memory.children_rss_mib()),
                    " / ".join(f"{v:.1f}" for v in memory.children_uss_mib()),
                    f"{memory.main.rss_mib:.1f}",
                )
            )
    return table(
        "Worker memory, MiB (RSS counts pages shared with the parent after fork; USS = private)",
        rows,
        header=("worker", "children RSS", "children USS", "main RSS"),
    )


def arguments(
    description: str, *, jobs: int = DEFAULT_JOBS, rounds: int = DEFAULT_ROUNDS
) -> argparse.Namespace:
    """Command-line options, defaulting to BENCH_JOBS / BENCH_ROUNDS / BENCH_TENANTS."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jobs", type=int, default=env_int("BENCH_JOBS", jobs))
    parser.add_argument("--rounds", type=int, default=env_int("BENCH_ROUNDS", rounds))
    parser.add_argument("--tenants", type=int, default=env_int("BENCH_TENANTS", 100))
    return parser.parse_args()


def main() -> None:
    args = arguments("End-to-end throughput: tenant path against plain Celery.")
    with bench_environment() as env:
        report = run(env, jobs=args.jobs, rounds=args.rounds)
        print()
        print(machine_summary())
        print(throughput_table(report))


if __name__ == "__main__":
    main()
