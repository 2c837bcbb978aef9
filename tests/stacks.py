"""A Redis of a test's own (so it can be stopped or flushed) with a web server and workers on it.

The database stays the run's test database, so the suite's actors and keys work; only Redis is
private, which is what fault tests need: flushing or stopping the run's Redis would hit every
other test, and other users of the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from saas_platform.lib.embedded import EmbeddedService, start_redis
from saas_platform.lib.service_urls import redis_with_db

from tests.servers import Proc, free_port, http_call, start_web
from tests.workers import CELERY, wait_for, worker_environment


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
