"""Where the database time of one job goes: statements, transactions and WAL per job.

A diagnostic next to the throughput figures, not part of `python -m bench`: it always starts a
private embedded PostgreSQL that logs every statement with its duration (REDIS_URL is still
honoured), and reads that log. Unlike jobs/s, these counts do not depend on what else the machine
is running, so they explain a throughput gap even on a busy machine. Logging every statement
slows the server, so the jobs/s of this run mean nothing.

For the tuned baseline, the tenant path and the two tenant-schemas-celery baselines in turn:
start the worker, run N jobs, stop the worker (a backend flushes its statistics when it exits),
then read per job:
- every statement the database ran for the scenario's database (submission included: for the
  tenant path that is the Job INSERT and the published_at UPDATE), with calls and server time
  (execution only: each call also costs a round trip and two context switches);
- transactions committed (pg_stat_database), WAL written (pg_current_wal_lsn; the server is ours
  alone), rows inserted / updated;
- the worker's CPU time.

Run: `python -m bench.queries [--jobs N]` (default 1000).
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.harness import BenchEnv, bench_environment, env_int, machine_summary, table
from bench.throughput import (
    BaselineScenario,
    ProductScenario,
    Scenario,
    TscScenario,
    baseline_database_create,
    baseline_database_name,
    product_tenant,
    tsc_available,
    tsc_database_create,
)

DEFAULT_JOBS = 1000
_TOP_STATEMENTS = 16


@dataclass(frozen=True)
class Statement:
    query: str
    calls: int
    total_ms: float


@dataclass(frozen=True)
class Profile:
    key: str
    jobs: int
    statements: list[Statement]
    transactions: int
    wal_bytes: int
    inserted: int
    updated: int
    worker_cpu_s: float

    def per_job(self, value: float) -> float:
        return value / self.jobs


_DB_COUNTERS = """
SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, pg_current_wal_lsn()
  FROM pg_stat_database WHERE datname = %s
"""


def _counters(env: BenchEnv, database: str) -> tuple[int, int, int, str]:
    with psycopg.connect(env.server_url, autocommit=True) as conn:
        row = conn.execute(_DB_COUNTERS, [database]).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), str(row[3])


def _wal_diff(env: BenchEnv, after: str, before: str) -> int:
    with psycopg.connect(env.server_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", [after, before]).fetchone()
    assert row is not None
    return int(row[0])


_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[\d+\] db=(?P<db>\S*) [A-Z]+:  (?P<message>.*)$"
)
_DURATION = re.compile(
    r"^duration: (?P<ms>[\d.]+) ms  (?P<phase>statement|parse|bind|execute)[^:]*: (?P<sql>.*)$",
    re.DOTALL,
)
_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|\$\d+")
_LISTS = re.compile(r"\(\?(?:, \?)+\)")


def _normalize(statement: str) -> str:
    """The statement with its constants replaced, so that one kind of statement is one row."""
    flat = _LITERAL.sub("?", " ".join(statement.split()))
    return _LISTS.sub("(?, ...)", flat)


def _log_records(text: str) -> list[tuple[str, str]]:
    """(database, message) per log record; a multi-line statement is one record."""
    records: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = _RECORD.match(line)
        if match:
            records.append((match["db"], match["message"]))
        elif records:
            database, message = records[-1]
            records[-1] = (database, message + "\n" + line)
    return records


def _statements(log: Path, offset: int, database: str) -> list[Statement]:
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    calls: dict[str, int] = defaultdict(int)
    times: dict[str, float] = defaultdict(float)
    for db, message in _log_records(text):
        match = _DURATION.match(message)
        if db != database or match is None or "/* bench */" in match["sql"]:
            continue
        key = _normalize(match["sql"])
        # The extended protocol logs parse, bind and execute apart: one call, three times.
        if match["phase"] in ("statement", "execute"):
            calls[key] += 1
        times[key] += float(match["ms"])
    found = [Statement(query, calls[query], times[query]) for query in times]
    return sorted(found, key=lambda s: (-s.calls, -s.total_ms))


def _profile(env: BenchEnv, scenario: Scenario, database: str, jobs: int) -> Profile:
    from django.db import connections

    assert env.postgres_log is not None
    before = _counters(env, database)
    log_offset = env.postgres_log.stat().st_size
    with scenario.worker:
        worker_cpu = scenario.worker.cpu_seconds()
        scenario.run_round(jobs, 0)
        worker_cpu = scenario.worker.cpu_seconds() - worker_cpu
    # Every backend that worked for this scenario exits now, and so flushes its statistics:
    # the worker's (stopped above), this process's Django connection, our counting connection.
    connections.close_all()
    bench_queries = scenario.bench_queries
    scenario.close()
    time.sleep(1.0)
    after = _counters(env, database)
    return Profile(
        key=scenario.key,
        jobs=jobs,
        statements=_statements(env.postgres_log, log_offset, database),
        # Each of our own counting queries ran in a transaction of its own (autocommit).
        transactions=after[0] - before[0] - bench_queries,
        wal_bytes=_wal_diff(env, after[3], before[3]),
        inserted=after[1] - before[1],
        updated=after[2] - before[2],
        worker_cpu_s=worker_cpu,
    )


def run(env: BenchEnv, *, jobs: int, variants: list[str]) -> list[Profile]:
    tsc_available()
    tenant = product_tenant()
    profiles = []
    baseline = BaselineScenario(env, baseline_database_create(env, "baseline-tuned"), reuse=True)
    profiles.append(_profile(env, baseline, baseline_database_name("baseline-tuned"), jobs))
    for variant in ["", *variants]:
        product = ProductScenario(env, tenant, variant=variant)
        profiles.append(_profile(env, product, env.product_database, jobs))
    for key, cached in (("tsc-default", False), ("tsc-cached", True)):
        tsc = TscScenario(env, tsc_database_create(env, key, cached=cached), cached=cached)
        profiles.append(_profile(env, tsc, baseline_database_name(key), jobs))
    return profiles


def _short(query: str, width: int = 88) -> str:
    flat = " ".join(query.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def profile_tables(profiles: list[Profile]) -> str:
    summary_rows: list[tuple[str, ...]] = []
    for p in profiles:
        calls = sum(s.calls for s in p.statements)
        ms = sum(s.total_ms for s in p.statements)
        summary_rows.append(
            (
                p.key,
                f"{p.per_job(calls):.1f}",
                f"{p.per_job(ms):.3f}",
                f"{p.per_job(p.transactions):.2f}",
                f"{p.per_job(p.wal_bytes) / 1024:.1f}",
                f"{p.per_job(p.inserted):.1f} / {p.per_job(p.updated):.1f}",
                f"{p.per_job(p.worker_cpu_s) * 1000:.2f}",
            )
        )
    parts = [
        table(
            "Per job (submission included), private PostgreSQL logging every statement",
            summary_rows,
            header=(
                "scenario",
                "statements",
                "server ms",
                "transactions",
                "WAL KiB",
                "rows ins / upd",
                "worker CPU ms",
            ),
        )
    ]
    for p in profiles:
        rows = [
            (_short(s.query), f"{p.per_job(s.calls):.2f}", f"{p.per_job(s.total_ms):.3f}")
            for s in p.statements[:_TOP_STATEMENTS]
        ]
        parts.append(
            table(
                f"Statements of {p.key}, most frequent first",
                rows,
                header=("statement", "calls/job", "ms/job"),
            )
        )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description="Statements, transactions and WAL per job.")
    parser.add_argument("--jobs", type=int, default=env_int("BENCH_JOBS", DEFAULT_JOBS))
    parser.add_argument(
        "--variants",
        default="",
        help="also profile the tenant worker with these bench.variant_settings changes "
        "(variants separated by ';', each a comma-separated list)",
    )
    args = parser.parse_args()
    variants = [v for v in args.variants.split(";") if v]
    with bench_environment(private_postgres=True) as env:
        profiles = run(env, jobs=args.jobs, variants=variants)
        print()
        print(machine_summary())
        print(profile_tables(profiles))


if __name__ == "__main__":
    main()
