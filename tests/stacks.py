"""Servers of a test's own, so that fault tests can stop or flush them, with a web server and
workers on them. Stopping or flushing the run's servers would hit every other test, and other
users of those servers.

- RedisStack: a Redis of its own; the database stays the run's test database, so the suite's
  actors and keys work.
- DatabaseStack: a PostgreSQL of its own, migrated and provisioned with the management commands
  an operator uses (one tenant, one API key); Redis stays the run's, under a key prefix of the
  stack's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from saas_platform.lib.embedded import EmbeddedService, start_postgres, start_redis
from saas_platform.lib.service_urls import database_url_with_name, redis_with_db

from tests.servers import Proc, free_port, http_call, start_web
from tests.workers import CELERY, REPO, wait_for, worker_environment


@dataclass
class RedisStack:
    redis_dir: Path
    redis_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_runs: list[EmbeddedService] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def redis(self) -> EmbeddedService:
        return self.redis_runs[-1]

    def start_redis(self) -> EmbeddedService:
        self.redis_runs.append(start_redis(self.redis_dir, port=self.redis_port))
        return self.redis

    def stop_redis(self) -> None:
        self.redis.stop()

    def broker(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def state(self) -> redis.Redis:
        return redis.Redis.from_url(redis_with_db(self.redis.url, 2))

    @property
    def env(self) -> dict[str, str]:
        return {**worker_environment(), "REDIS_URL": self.redis.url, **self.extra_env}

    def start_web(self) -> Proc:
        self.procs["web"] = start_web(self.env, self.web_port)
        return self.procs["web"]

    def start_worker(self, name: str, *, pool: str = "prefork", concurrency: int = 2) -> Proc:
        args = [
            CELERY, "-A", "saas_platform", "worker", "-l", "INFO",
            "-P", pool, "-c", str(concurrency), "-n", f"{name}-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        worker = Proc(name, args, self.env)
        self.procs[name] = worker
        wait_for(lambda: worker.count(" ready.") or not worker.alive, timeout=60, what=name)
        assert worker.alive, worker.output()
        return worker

    def dispatch_once(self, tenant_id: int, queue: str = "default") -> None:
        """One dispatcher turn for the tenant, against this stack's Redis, in a child process."""
        code = (
            "import django; django.setup()\n"
            "from saas_platform.lib.tenant_context import tenant_activated\n"
            "from jobs.services.dispatch import tenant_dispatch_turn\n"
            f"with tenant_activated({tenant_id}):\n"
            f"    print(tenant_dispatch_turn(tenant_id={tenant_id}, queue={queue!r}, room=10,"
            " alone=True).sent)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert int(done.stdout.strip().splitlines()[-1]) >= 1, done.stdout

    def call(self, method: str, path: str, key: str, body: Any = None) -> Any:
        reply = http_call(self.web_port, method, f"/api/v1{path}", key=key, body=body)
        assert reply.status < 300, (reply.status, reply.body[:500])
        return reply.json()

    def outputs(self) -> str:
        return "".join(proc.output() for proc in self.procs.values())

    def close(self) -> None:
        for proc in reversed(self.procs.values()):
            proc.stop()
        for run in self.redis_runs:
            run.stop()


def manage(env: dict[str, str], *args: str) -> str:
    """`manage.py <args>` in a child process; its output, or a failure with what it printed."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class DatabaseStack:
    """Our own PostgreSQL and what runs on it; `close()` stops the web server and PostgreSQL."""

    pg_dir: Path
    db_name: str
    slug: str
    pg_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    key: str = ""
    pg_runs: list[EmbeddedService] = field(default_factory=list)
    web: Proc | None = None

    @property
    def pg(self) -> EmbeddedService:
        return self.pg_runs[-1]

    @property
    def host(self) -> str:
        return f"{self.slug}.localhost"

    def start_postgres(self) -> EmbeddedService:
        """Start it (again: the same data directory and port)."""
        self.pg_runs.append(start_postgres(self.pg_dir, port=self.pg_port))
        return self.pg

    @property
    def database_url(self) -> str:
        return database_url_with_name(self.pg.url, self.db_name)

    @property
    def env_overrides(self) -> dict[str, str]:
        """What points a process of the run at this stack."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_KEY_PREFIX": f"{os.environ['REDIS_KEY_PREFIX']}{self.db_name}:",
        }

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.env_overrides}
        env.pop("TEST_DATABASE_NAME", None)
        return env

    def provision(self) -> None:
        """PostgreSQL started, the database created and migrated, the tenant and its key made."""
        self.start_postgres()
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        manage(self.env, "migrate", "--verbosity", "0")
        manage(self.env, "tenant_create", self.slug, "--name", self.slug.title())
        self.key = manage(self.env, "apikey_create", self.slug).strip().splitlines()[-1]

    def start_web(self) -> Proc:
        self.web = start_web(self.env, self.web_port)
        return self.web

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """An API call as the stack's tenant; fails unless answered 2xx."""
        reply = http_call(
            self.web_port, method, f"/api/v1{path}", host=self.host, key=self.key, body=body
        )
        assert reply.status < 300, (reply.status, reply.body[:500])
        return reply.json()

    def job_count(self) -> int:
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            table = f'"{self.slug}".jobs_job'
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        if self.web is not None:
            self.web.stop()
        for run in self.pg_runs:
            run.stop()
