"""The embedded PostgreSQL and Redis used by `make run` / `make test` when no URL is given.

Plain functions without Django: these servers must work before any settings exist. Every server
gets a free port, never 5432 or 6379, so a system PostgreSQL or Redis is left alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from saas_platform.lib.embedded import EmbeddedService, start_postgres, start_redis

Starter = Callable[..., EmbeddedService]


@pytest.fixture
def services() -> Iterator[list[EmbeddedService]]:
    """Collects started services and stops them even when a test fails half-way."""
    started: list[EmbeddedService] = []
    yield started
    for service in started:
        service.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_postgres_keeps_data_across_restarts(
    tmp_path: Path, services: list[EmbeddedService]
) -> None:
    first = start_postgres(tmp_path / "pg")
    services.append(first)
    assert first.name == "postgres"
    assert first.url.startswith("postgres://postgres@127.0.0.1:")
    assert _port(first.url) != 5432
    with psycopg.connect(first.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    first.stop()
    first.stop()  # idempotent

    second = start_postgres(tmp_path / "pg")
    services.append(second)
    with psycopg.connect(second.url) as conn:
        assert conn.execute("SELECT value FROM kept").fetchall() == [("still here",)]
        # The cluster is UTF-8 with the C locale on every machine.
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)


def test_redis_keeps_data_across_restarts(tmp_path: Path, services: list[EmbeddedService]) -> None:
    first = start_redis(tmp_path / "redis")
    services.append(first)
    assert first.name == "redis"
    assert first.url.startswith("redis://127.0.0.1:")
    assert _port(first.url) != 6379
    client = redis.Redis.from_url(first.url)
    client.set("kept", "still here")
    client.close()
    first.stop()
    first.stop()

    second = start_redis(tmp_path / "redis")
    services.append(second)
    client = redis.Redis.from_url(second.url)
    assert client.get("kept") == b"still here"
    client.close()


@pytest.mark.parametrize("start", [start_postgres, start_redis])
def test_a_port_in_use_is_refused_with_its_number(tmp_path: Path, start: Starter) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} .*already in use"):
            start(tmp_path / "data", port=port)


@pytest.mark.parametrize("start", [start_postgres, start_redis])
def test_an_explicit_free_port_is_used(
    tmp_path: Path, start: Starter, services: list[EmbeddedService]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = start(tmp_path / "data", port=port)
    services.append(service)
    assert _port(service.url) == port


@pytest.mark.parametrize("start", [start_postgres, start_redis])
def test_a_data_dir_in_use_by_a_live_process_is_refused(
    tmp_path: Path, start: Starter, services: list[EmbeddedService]
) -> None:
    services.append(start(tmp_path / "data"))
    with pytest.raises(RuntimeError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
        start(tmp_path / "data")


def test_a_stale_postmaster_pid_naming_a_live_unrelated_process_is_ignored(
    tmp_path: Path, services: list[EmbeddedService]
) -> None:
    first = start_postgres(tmp_path / "pg")
    first.stop()
    # After a reboot or in a new container the recorded pid may belong to anything; PostgreSQL
    # alone would refuse to start ("Is another postmaster running?").
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = tmp_path / "pg" / "pgdata" / "postmaster.pid"
        pidfile.write_text(f"{unrelated.pid}\n{tmp_path / 'pg' / 'pgdata'}\n0\n0\n\n\n\n")
        services.append(start_postgres(tmp_path / "pg"))
        assert unrelated.poll() is None  # not signalled
    finally:
        unrelated.kill()
        unrelated.wait()


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_a_server_orphaned_by_a_crashed_run_is_replaced(
    tmp_path: Path, kind: str, services: list[EmbeddedService]
) -> None:
    # A run killed with SIGKILL cannot stop its server, which keeps its data directory busy.
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from saas_platform.lib.embedded import start_{kind}
        service = start_{kind}(Path(sys.argv[1]))
        print(service.pid, flush=True)
        time.sleep(120)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    crashed = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert crashed.stdout is not None
        orphan_pid = int(crashed.stdout.readline())
    finally:
        crashed.send_signal(signal.SIGKILL)
        crashed.wait()
    assert psutil.pid_exists(orphan_pid)

    service = (
        start_postgres(tmp_path / "data") if kind == "postgres" else start_redis(tmp_path / "data")
    )
    services.append(service)
    assert service.pid != orphan_pid
    assert not psutil.pid_exists(orphan_pid) or psutil.Process(orphan_pid).status() == "zombie"
