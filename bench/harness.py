"""What every benchmark needs: servers, its own databases and Redis keys, worker processes.

`bench_environment()` is the one entry point. It starts embedded PostgreSQL / Redis when
DATABASE_URL / REDIS_URL are unset (like tests/bootstrap.py), creates the product database
`bench_<pid>_saas`, points Django at it, migrates the public schema, and on the way out drops
every database it created and deletes every Redis key under its prefix `bench<pid>:`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psycopg
import redis
from psycopg import sql
from saas_platform.lib.service_urls import database_url_with_name, redis_with_db

REPO = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))
RUN_ID = str(os.getpid())
_DROP = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")


@dataclass
class BenchEnv:
    """The servers and names of one benchmark run."""

    server_url: str  # any database on the server; used to CREATE/DROP ours
    redis_url: str
    key_prefix: str  # every Redis key of this run starts with it
    product_database: str
    workdir: Path  # worker logs; removed at the end
    postgres_log: Path | None = None  # set when the server is our private, logging one
    _databases: list[str] = field(default_factory=list)

    def database_url(self, name: str) -> str:
        url: str = database_url_with_name(self.server_url, name)
        return url

    def database_create(self, name: str) -> str:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._databases.append(name)
        return self.database_url(name)

    def databases_drop(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            for name in reversed(self._databases):
                # FORCE: a worker killed mid-task may still hold a session.
                conn.execute(_DROP.format(sql.Identifier(name)))
        self._databases.clear()

    def redis_keys_delete(self) -> None:
        for db in (0, 1, 2):  # broker, Django cache and the platform's state databases
            with contextlib.suppress(redis.RedisError):
                # The URL's own database would win over a db= argument: name it in the URL.
                client = redis.Redis.from_url(redis_with_db(self.redis_url, db))
                keys = list(client.scan_iter(match=f"*{self.key_prefix}*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])

    def session_pids(self) -> set[int]:
        """The server processes of every session on our databases (if the server is local)."""
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", [self._databases]
            ).fetchall()
        return {int(row[0]) for row in rows}

    def product_environment(self) -> dict[str, str]:
        """The environment of a product process (this one and the product worker)."""
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="saas_platform.settings",
            DATABASE_URL=self.database_url(self.product_database),
            REDIS_URL=self.redis_url,
            REDIS_KEY_PREFIX=f"{self.key_prefix}product:",
            SECRET_KEY=f"bench-secret-key-{RUN_ID}",
            DEBUG="false",
            BASE_DOMAIN="localhost",
            # Production logging level: workers log every task at INFO, as they would in service.
            LOG_LEVEL="INFO",
        )
        env.pop("TEST_DATABASE_NAME", None)
        return env


def _start_servers(
    stack: contextlib.ExitStack, workdir: Path, *, private_postgres: bool
) -> tuple[str, str]:
    database_url = "" if private_postgres else os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if database_url and redis_url:
        return database_url, redis_url
    from saas_platform.lib import embedded

    if private_postgres:
        database_url = _start_postgres_logging_statements(stack, workdir / "postgres")
    elif not database_url:
        print("starting embedded PostgreSQL ...", flush=True)
        postgres = embedded.start_postgres(workdir / "postgres")
        stack.callback(postgres.stop)
        database_url = postgres.url
    if not redis_url:
        print("starting embedded Redis ...", flush=True)
        redis_server = embedded.start_redis(workdir / "redis")
        stack.callback(redis_server.stop)
        redis_url = redis_server.url
    return database_url, redis_url


def _start_postgres_logging_statements(stack: contextlib.ExitStack, data_dir: Path) -> str:
    """An embedded PostgreSQL of our own that logs every statement with its duration.

    pgserver's build ships no pg_stat_statements, and a shared server's log (or counters) would
    mix in other people's work; our own server's log holds only ours. start_postgres takes no
    server options, so they are set with ALTER SYSTEM and a reload.
    """
    from saas_platform.lib import embedded

    print("starting a private PostgreSQL that logs every statement ...", flush=True)
    postgres = embedded.start_postgres(data_dir)
    stack.callback(postgres.stop)
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
        # The database name on every line: the log is split per scenario by it.
        conn.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] db=%d '")
        conn.execute("SELECT pg_reload_conf()")
    url: str = postgres.url
    return url


@contextlib.contextmanager
def bench_environment(
    *, private_postgres: bool = False, overrides: dict[str, str] | None = None
) -> Iterator[BenchEnv]:
    """Servers, the product database (migrated), Django set up; everything removed afterwards.

    `private_postgres`: always start an embedded PostgreSQL that logs every statement, even
    when DATABASE_URL is set (for statement counts; see bench.queries). Its log is
    `env.postgres_log`. `overrides`: environment this process's Django starts with, on top of
    the product's (another settings module, LOG_FORMAT).
    """
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="saas-bench-"))
        stack.callback(shutil.rmtree, workdir, True)
        server_url, redis_url = _start_servers(stack, workdir, private_postgres=private_postgres)
        env = BenchEnv(
            server_url=server_url,
            redis_url=redis_url,
            key_prefix=f"bench{RUN_ID}:",
            product_database=f"bench_{RUN_ID}_saas",
            workdir=workdir,
            postgres_log=workdir / "postgres" / "postgres.log" if private_postgres else None,
        )
        stack.callback(env.redis_keys_delete)
        stack.callback(env.databases_drop)
        env.database_create(env.product_database)
        # Settings read the environment once, at import: set it before Django starts.
        os.environ.update(env.product_environment())
        os.environ.update(overrides or {})
        import django

        django.setup()
        stack.callback(_django_connections_close)
        from django.core.management import call_command

        started = time.perf_counter()
        # django-tenants' migrate: the public schema (there are no tenant schemas yet).
        call_command("migrate", interactive=False, verbosity=0)
        print(f"product database migrated in {time.perf_counter() - started:.1f}s", flush=True)
        yield env


def _django_connections_close() -> None:
    from django.db import connections

    connections.close_all()


# --------------------------------------------------------------------------------------------
# Worker processes


class Worker:
    """`celery -A <app> worker -P prefork -c 2` in a child process, output to a log file.

    The log goes to a file, not a pipe: pumping thousands of INFO lines through this process
    would cost the benchmark CPU that a deployed worker's log shipper does not take from it.
    """

    def __init__(
        self,
        *,
        label: str,
        app: str,
        env: dict[str, str],
        workdir: Path,
        pool: str = "prefork",
        concurrency: int = 2,
    ) -> None:
        self.label = label
        self.env = dict(env)
        # `celery -A bench.baseline_app` must find this checkout's modules; the project itself
        # is installed (editable) but bench/ is not.
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), self.env.get("PYTHONPATH", "")) if p
        )
        self.args = [
            CELERY, "-A", app, "worker", "-l", "INFO",
            "-P", pool, "-c", str(concurrency), "-Q", "default",
            "-n", f"bench-{label}-{RUN_ID}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        self.log_path = workdir / f"worker-{label}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Worker:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 90
        while " ready." not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {self.label} did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "".join(deque(self.log_text().splitlines(keepends=True), maxlen=lines))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def children(self) -> list[int]:
        """Pool children: the prefork pool's processes are direct children of the main one."""
        out = subprocess.run(
            ["ps", "--ppid", str(self.pid), "-o", "pid="],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return sorted(int(p) for p in out.split())

    def memory(self) -> WorkerMemory:
        return WorkerMemory(
            main=process_memory(self.pid),
            children=[process_memory(pid) for pid in self.children()],
        )

    def cpu_seconds(self) -> float:
        """CPU time used so far by the worker: main process, pool children, reaped children."""
        main = _proc_times(self.pid, with_reaped_children=True)
        return main + sum(_proc_times(pid, with_reaped_children=False) for pid in self.children())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_times(pid: int, *, with_reaped_children: bool) -> float:
    """utime + stime (and cutime + cstime) of a process from /proc/<pid>/stat, in seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0  # exited between listing and reading: its time went to the parent's cutime
    # The command name (field 2) may contain spaces; the fields after it are space-separated.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    ticks = utime + stime + (cutime + cstime if with_reaped_children else 0)
    return ticks / _CLOCK_TICKS


def _all_process_times() -> dict[int, tuple[str, float]]:
    """pid -> (start time, CPU seconds) of every process visible in /proc."""
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()
        found[int(entry.name)] = (fields[19], (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    return found


class OthersCpu:
    """CPU time that processes other than ours used over an interval.

    On a shared machine (other test runs, other benchmarks) that is the noise in every figure
    here; the load average cannot tell it apart from our own load. Processes that started and
    ended within the interval are missed (an undercount); so are ours that did (the baseline's
    per-task database sessions), which is the right way round.
    """

    def __init__(self) -> None:
        self._start = _all_process_times()
        self._started = time.perf_counter()

    def used_by(self, pids: set[int]) -> float:
        """CPU seconds that these processes used over the interval (ones started meanwhile
        count whole)."""
        used = 0.0
        for pid, (start_time, cpu) in _all_process_times().items():
            if pid in pids:
                before = self._start.get(pid)
                used += cpu - before[1] if before and before[0] == start_time else cpu
        return used

    def share(self, own_pids: set[int]) -> float:
        """Others' CPU as a fraction of all cores over the interval (1.0 = every core busy)."""
        used = 0.0
        for pid, (start_time, cpu) in _all_process_times().items():
            if pid in own_pids:
                continue
            before = self._start.get(pid)
            used += cpu - before[1] if before and before[0] == start_time else cpu
        elapsed = time.perf_counter() - self._started
        return used / (elapsed * (os.cpu_count() or 1))


def redis_server_pids() -> set[int]:
    """The machine's redis-server processes (shared with anything else using them)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "redis-server":
                    found.add(int(entry.name))
    return found


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every figure here."""
    return os.getloadavg()[0]


# --------------------------------------------------------------------------------------------
# Memory


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    rss_kib: int  # resident pages, shared copy-on-write pages from the fork included
    uss_kib: int  # private pages only: what this process costs on its own

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def uss_mib(self) -> float:
        return self.uss_kib / 1024


@dataclass(frozen=True)
class WorkerMemory:
    main: ProcessMemory
    children: list[ProcessMemory]

    def children_rss_mib(self) -> list[float]:
        return [c.rss_mib for c in self.children]

    def children_uss_mib(self) -> list[float]:
        return [c.uss_mib for c in self.children]


def _proc_fields(path: Path, names: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in names:
                found[key] = int(rest.split()[0])
    return found


def process_memory(pid: int) -> ProcessMemory:
    status = _proc_fields(Path(f"/proc/{pid}/status"), {"VmRSS"})
    rollup = _proc_fields(Path(f"/proc/{pid}/smaps_rollup"), {"Private_Clean", "Private_Dirty"})
    return ProcessMemory(
        pid=pid,
        rss_kib=status.get("VmRSS", 0),
        uss_kib=rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0),
    )


# --------------------------------------------------------------------------------------------
# Timing and printing


class StatementCounter:
    """A Django execute_wrapper counting SQL statements (CaptureQueriesContext keeps only the
    last 9,000)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        self.count += 1
        return execute(sql, params, many, context)


@contextlib.contextmanager
def statements_counted_everywhere(counter: StatementCounter) -> Iterator[None]:
    """`counter` as an execute wrapper of every connection of every thread for the block (the
    beat fires occurrences in threads of its own, each on its own connection)."""
    from django.db.backends.utils import CursorWrapper

    original = CursorWrapper._execute_with_wrappers

    def counted(self, sql, params, many, executor):  # type: ignore[no-untyped-def]
        return original(self, sql, params, many, functools.partial(counter, executor))

    CursorWrapper._execute_with_wrappers = counted  # type: ignore[method-assign]
    try:
        yield
    finally:
        CursorWrapper._execute_with_wrappers = original  # type: ignore[method-assign]


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float, what: str
) -> float:
    """Poll until `condition()`; returns the perf_counter() at which it was first seen true."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: with 100 samples, p95 is the 95th smallest."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered))))
    return ordered[rank - 1]


def table(
    title: str, rows: Sequence[tuple[str, ...]], header: tuple[str, ...] | None = None
) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    all_rows = ([header] if header else []) + list(rows)
    widths = [
        max(len(r[i]) if i < len(r) else 0 for r in all_rows) for i in range(len(all_rows[0]))
    ]
    lines = [title]
    for n, row in enumerate(all_rows):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
        if header and n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_summary() -> str:
    return f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}"


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default
