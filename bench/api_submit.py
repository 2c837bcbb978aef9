"""API submit latency and throughput through gunicorn: `POST /api/v1/jobs` and `/jobs/batch`.

Prints figures, asserts nothing. One run:
1. Single-job submit (`{"type": "demo.add", "args": {"x": 1, "y": 2}}`) with a tenant key on
   `acme.localhost`, from N keep-alive clients (default 8) for a fixed time after a warm-up:
   requests/s, p50/p90/p99/max latency, errors. Next to it the same requests (same body and
   headers) against `/bench/trivial`, a view returning `{"ok": true}` behind the same middleware,
   served by the same gunicorn (bench.web_settings); the ratio of the two is what the API's own
   work costs. One-client rows give the unloaded latency (service time, no queueing).
2. Batch submit: 1000 jobs a request from a few clients: jobs/s and per-request latency.
3. SQL statements per request, counted in-process (django.test.Client).

The web is the production command (`gunicorn -c deploy/gunicorn.conf.py saas_platform.wsgi`,
sync workers, WEB_CONCURRENCY=--workers) with DEBUG off. Its max_requests recycles workers; the
`restarts` column says when that happened inside a load (expect a latency spike there).

CPU columns say where the time went, in CPU milliseconds per request: the gunicorn workers, our
database's PostgreSQL backends, the Redis server (whole server: shared with anything else using
it) and the load generator (2 cores: it competes with the server, so it is reported). `others`
is the CPU, in cores, that the rest of the machine used meanwhile: above ~0.2 the figures are
skewed by other work and should be rerun. A hypervisor's noise does not show there; run twice.

The load generator is `wrk` when installed (C, cheap), else one Python process per client with
a keep-alive http.client connection. No worker runs: jobs stay queued in Redis under this run's
key prefix (bench<pid>:) and are deleted at the end, with the database.

Run: `python -m bench.api_submit [--workers 4] [--duration 10] [--python-client]`; `--settings`
serves a variant settings module instead (it must keep /bench/trivial), to measure a change.
Goals (from the issue): submit p99 < 25 ms; batch >= 5,000 jobs/s.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.harness import (
    REPO,
    BenchEnv,
    bench_environment,
    load_average,
    machine_summary,
    percentile,
    table,
)

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
HOST = "acme.localhost"
SUBMIT_PATH = "/api/v1/jobs"
BATCH_PATH = "/api/v1/jobs/batch"
TRIVIAL_PATH = "/bench/trivial"
SUBMIT_BODY: dict[str, Any] = {"type": "demo.add", "args": {"x": 1, "y": 2}}
BATCH_SIZE = 1000
GOAL_P99_MS = 25.0
GOAL_BATCH_JOBS_S = 5000.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# CPU accounting


def _cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """utime + stime of a process (plus its reaped children's), from /proc; 0 if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = sum(int(v) for v in fields[11 : 15 if reaped else 13])
    return ticks / _CLOCK_TICKS


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def _machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / _CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    gunicorn: float
    postgres: dict[int, float]  # per backend of our database
    redis: float
    machine: float


@dataclass
class CpuProbe:
    """CPU seconds used so far by gunicorn (master, workers, restarted workers), our database's
    PostgreSQL backends, the Redis server (all of it) and the whole machine."""

    gunicorn_pid: int
    server_url: str
    database: str
    redis_url: str

    def _postgres_pids(self) -> list[int]:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.database,),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def _redis_cpu(self) -> float:
        try:
            info: Mapping[str, Any] = redis.Redis.from_url(self.redis_url).info("cpu")
        except redis.RedisError:
            return float("nan")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def sample(self) -> CpuSample:
        gunicorn = _cpu_seconds(self.gunicorn_pid, reaped=True) + sum(
            _cpu_seconds(pid) for pid in _children(self.gunicorn_pid)
        )
        return CpuSample(
            gunicorn=gunicorn,
            postgres={pid: _cpu_seconds(pid) for pid in self._postgres_pids()},
            redis=self._redis_cpu(),
            machine=_machine_busy_seconds(),
        )

    @staticmethod
    def used(before: CpuSample, after: CpuSample) -> dict[str, float]:
        # A backend that ended inside the window (a restarted gunicorn worker's) is missed; one
        # that started inside it counts whole. /proc of a remote server is not ours: n/a.
        postgres = sum(cpu - before.postgres.get(pid, 0.0) for pid, cpu in after.postgres.items())
        return {
            "gunicorn": after.gunicorn - before.gunicorn,
            "postgres": postgres if any(after.postgres.values()) else float("nan"),
            "redis": after.redis - before.redis,
            "machine": after.machine - before.machine,
        }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class LoadResult:
    label: str
    tool: str
    clients: int
    seconds: float
    ok: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_s: float
    server_cpu_s: dict[str, float]
    restarts: int = 0  # gunicorn workers booted during the load (max_requests)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else float("nan")

    def cpu_ms_per_request(self, name: str) -> float:
        cpu = self.client_cpu_s if name == "client" else self.server_cpu_s.get(name, float("nan"))
        return 1000 * cpu / self.ok if self.ok else float("nan")

    @property
    def others_cores(self) -> float:
        """Cores' worth of CPU that other processes on the machine took during the load."""
        ours = self.client_cpu_s + sum(
            v
            for k, v in self.server_cpu_s.items()
            if k != "machine" and v == v  # not NaN
        )
        return (self.server_cpu_s.get("machine", float("nan")) - ours) / self.seconds


def _latency_result(
    label: str,
    tool: str,
    clients: int,
    seconds: float,
    latencies: list[float],
    errors: int,
    client_cpu_s: float,
    server_cpu_s: dict[str, float],
) -> LoadResult:
    ms = [1000 * s for s in latencies]
    return LoadResult(
        label=label,
        tool=tool,
        clients=clients,
        seconds=seconds,
        ok=len(ms),
        errors=errors,
        p50_ms=percentile(ms, 0.50),
        p90_ms=percentile(ms, 0.90),
        p99_ms=percentile(ms, 0.99),
        max_ms=max(ms) if ms else float("nan"),
        client_cpu_s=client_cpu_s,
        server_cpu_s=server_cpu_s,
    )


@dataclass(frozen=True)
class Target:
    """What every request of one load looks like."""

    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    expect: int  # the status of a success


# --------------------------------------------------------------------------------------------
# Python load generator: one process per client, one keep-alive connection each


@dataclass(frozen=True)
class ClientPlan:
    target: Target
    warmup: float
    duration: float


def _client_main(plan: ClientPlan, barrier: Barrier, results: Queue[Any]) -> None:
    """Send requests back to back; keep those completed inside the measured window."""
    target = plan.target
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
    latencies: list[float] = []
    errors = 0
    barrier.wait()
    begin = time.perf_counter() + plan.warmup
    end = begin + plan.duration
    cpu_begin: float | None = None
    while True:
        started = time.perf_counter()
        if started >= end:
            break
        if cpu_begin is None and started >= begin:
            cpu_begin = time.process_time()
        try:
            conn.request("POST", target.path, body=target.body, headers=target.headers)
            response = conn.getresponse()
            response.read()
            good = response.status == target.expect
        except (OSError, http.client.HTTPException):
            good = False
            conn.close()  # the next request reconnects
        finished = time.perf_counter()
        if begin <= finished < end:
            if good:
                latencies.append(finished - started)
            else:
                errors += 1
    cpu = time.process_time() - (cpu_begin if cpu_begin is not None else time.process_time())
    conn.close()
    results.put((latencies, errors, cpu))


def run_python_clients(
    label: str, target: Target, *, clients: int, warmup: float, duration: float, probe: CpuProbe
) -> LoadResult:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    results: Queue[Any] = ctx.Queue()
    plan = ClientPlan(target=target, warmup=warmup, duration=duration)
    processes = [
        ctx.Process(target=_client_main, args=(plan, barrier, results), daemon=True)
        for _ in range(clients)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=120)
    time.sleep(warmup)
    before = probe.sample()
    time.sleep(duration)
    after = probe.sample()
    collected = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    latencies = [s for result in collected for s in result[0]]
    return _latency_result(
        label,
        "python",
        clients,
        duration,
        latencies,
        errors=sum(result[1] for result in collected),
        client_cpu_s=sum(result[2] for result in collected),
        server_cpu_s=CpuProbe.used(before, after),
    )


# --------------------------------------------------------------------------------------------
# wrk load generator

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _wrk_script(target: Target, workdir: Path) -> Path:
    # JSON string literals of ASCII text are valid Lua string literals.
    headers = "\n".join(
        f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}"
        for name, value in target.headers.items()
        if name.lower() != "content-length"  # wrk computes it from the body
    )
    script = workdir / f"wrk{target.path.replace('/', '-')}.lua"
    script.write_text(_WRK_SCRIPT.format(body=json.dumps(target.body.decode()), headers=headers))
    return script


def _wrk(target: Target, script: Path, *, clients: int, seconds: float) -> dict[str, int]:
    threads = max(1, min(clients, os.cpu_count() or 1))
    args = [
        "wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds:g}s",
        "--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{target.port}{target.path}",
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            figures: dict[str, int] = json.loads(line.removeprefix("BENCHJSON "))
            return figures
    raise RuntimeError(f"wrk printed no figures:\n{out.stdout}\n{out.stderr}")


def run_wrk(
    label: str,
    target: Target,
    *,
    clients: int,
    warmup: float,
    duration: float,
    probe: CpuProbe,
    workdir: Path,
) -> LoadResult:
    script = _wrk_script(target, workdir)
    if warmup > 0:
        _wrk(target, script, clients=clients, seconds=warmup)
    before, client_before = probe.sample(), _children_cpu()
    figures = _wrk(target, script, clients=clients, seconds=duration)
    after, client_after = probe.sample(), _children_cpu()
    errors = sum(figures[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        label=label,
        tool="wrk",
        clients=clients,
        seconds=figures["duration_us"] / 1e6,
        ok=figures["requests"] - figures["status"],
        errors=errors,
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        client_cpu_s=client_after - client_before,
        server_cpu_s=CpuProbe.used(before, after),
    )


# --------------------------------------------------------------------------------------------
# The server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Web:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def booted_workers(self) -> int:
        return self.log_path.read_text(errors="replace").count("Booting worker")


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz", headers={"Host": "localhost"})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def gunicorn(env: BenchEnv, *, workers: int, settings: str) -> Iterator[Web]:
    """The production web command (deploy/gunicorn.conf.py) with bench.web_settings."""
    port = _free_port()
    environment = env.product_environment()
    environment.update(
        DJANGO_SETTINGS_MODULE=settings,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), environment.get("PYTHONPATH", "")) if p),
        REDIS_KEY_PREFIX=env.key_prefix,
        PORT=str(port),
        WEB_CONCURRENCY=str(workers),
    )
    log_path = env.workdir / "gunicorn.log"
    args = [GUNICORN, "-c", "deploy/gunicorn.conf.py", "saas_platform.wsgi"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    web = Web(process=process, port=port, log_path=log_path)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start:\n" + log_path.read_text()[-4000:])
            time.sleep(0.2)
        yield web
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# --------------------------------------------------------------------------------------------
# Setup and in-process diagnostics


def _tenant_and_key() -> str:
    from billing.models import Subscription
    from billing.services import tenant_create_on_plan
    from tenants.services import apikey_create

    # What the API costs, not what a plan allows: enterprise's monthly quota (100 million) is
    # beyond a run's jobs (free's 10,000 is not: a run submits more, and every batch was a 429),
    # and an operator's override lifts its submit rate (1000/s).
    created = tenant_create_on_plan(slug="acme", name="Acme", plan_slug="enterprise")
    Subscription.objects.filter(tenant=created.tenant).update(submit_rate_override="1000000/s")
    return apikey_create(tenant=created.tenant, name="bench").plaintext


def sql_per_request(key: str) -> dict[str, list[str]]:
    """The SQL statements of one submit and one 1000-job batch, through django.test.Client
    (the product's settings; a key used once before, so no last_used_at write)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST=HOST, HTTP_AUTHORIZATION=f"Bearer {key}")
    statements: dict[str, list[str]] = {}
    for name, path, body in (
        ("submit", SUBMIT_PATH, SUBMIT_BODY),
        ("batch", BATCH_PATH, _batch_body()),
    ):
        with CaptureQueriesContext(connection) as captured:
            response = client.post(path, body, content_type="application/json")
        if response.status_code != 202:
            raise RuntimeError(f"{path}: {response.status_code} {response.content[:500]!r}")
        statements[name] = [query["sql"] for query in captured.captured_queries]
    return statements


def _batch_body() -> dict[str, Any]:
    return {"jobs": [{"type": "demo.add", "args": {"x": n, "y": 2}} for n in range(BATCH_SIZE)]}


def _summarise(sql: str) -> str:
    words = sql.split()
    head = " ".join(words[:3]) if words else ""
    return (head[:60] + " ...") if len(sql) > len(head) else head


# --------------------------------------------------------------------------------------------
# Printing


def _f(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"  # NaN check


def latency_table(results: list[LoadResult], workers: int) -> str:
    rows: list[tuple[str, ...]] = [
        (
            r.label,
            str(r.clients),
            _f(r.rps, 0),
            _f(r.p50_ms),
            _f(r.p90_ms),
            _f(r.p99_ms),
            _f(r.max_ms),
            str(r.errors),
            _f(r.cpu_ms_per_request("gunicorn"), 2),
            _f(r.cpu_ms_per_request("postgres"), 2),
            _f(r.cpu_ms_per_request("redis"), 2),
            _f(r.cpu_ms_per_request("client"), 2),
            _f(r.others_cores, 2),
            str(r.restarts),
        )
        for r in results
    ]
    header = (
        "scenario", "conc", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
        "web", "pg", "redis", "client", "others", "restarts",
    )  # fmt: skip
    return table(
        f"API requests through gunicorn ({workers} sync workers). web/pg/redis/client: CPU ms per "
        "request; others: cores used by other processes meanwhile; restarts: workers booted",
        rows,
        header,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=int, default=4, help="gunicorn WEB_CONCURRENCY")
    parser.add_argument("--clients", type=int, default=8, help="concurrent single-job clients")
    parser.add_argument("--batch-clients", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per load")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument(
        "--settings",
        default="bench.web_settings",
        help="the web's settings module, to compare a variant (must serve /bench/trivial)",
    )
    args = parser.parse_args()

    use_wrk = shutil.which("wrk") is not None and not args.python_client
    started = time.perf_counter()
    load_before = load_average()
    with bench_environment() as env:
        key = _tenant_and_key()
        print(f"tenant acme and key ready after {time.perf_counter() - started:.1f}s", flush=True)
        headers = {
            "Host": HOST,
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        submit_body = json.dumps(SUBMIT_BODY).encode()
        batch_body = json.dumps(_batch_body()).encode()
        with gunicorn(env, workers=args.workers, settings=args.settings) as web:
            probe = CpuProbe(web.process.pid, env.server_url, env.product_database, env.redis_url)
            submit = Target(web.port, SUBMIT_PATH, submit_body, headers, 202)
            trivial = Target(web.port, TRIVIAL_PATH, submit_body, headers, 200)
            batch = Target(web.port, BATCH_PATH, batch_body, headers, 202)

            def load(
                label: str, target: Target, clients: int, duration: float, *, python: bool
            ) -> LoadResult:
                print(f"  {label}: {clients} client(s), {duration:g}s ...", flush=True)
                booted_before = web.booted_workers()
                if python:
                    result = run_python_clients(
                        label, target, clients=clients, warmup=args.warmup, duration=duration,
                        probe=probe,
                    )  # fmt: skip
                else:
                    result = run_wrk(
                        label, target, clients=clients, warmup=args.warmup, duration=duration,
                        probe=probe, workdir=env.workdir,
                    )  # fmt: skip
                result.restarts = web.booted_workers() - booted_before
                return result

            python = not use_wrk
            submit_n = load("submit", submit, args.clients, args.duration, python=python)
            trivial_n = load("trivial", trivial, args.clients, args.duration, python=python)
            results = [
                submit_n,
                trivial_n,
                load("submit", submit, 1, args.duration / 2, python=python),
                load("trivial", trivial, 1, args.duration / 2, python=python),
            ]
            # Few, long requests: the Python client costs next to nothing here.
            batch_result = load(
                f"batch x{BATCH_SIZE}", batch, args.batch_clients, args.duration, python=True
            )
        statements = sql_per_request(key)
        load_after = load_average()

    print()
    print(f"== api_submit: {machine_summary()}, {time.perf_counter() - started:.0f}s in all ==")
    print(
        f"gunicorn: deploy/gunicorn.conf.py, WEB_CONCURRENCY={args.workers} (sync workers), "
        f"DJANGO_SETTINGS_MODULE={args.settings}"
    )
    client = "wrk" if use_wrk else "Python http.client processes"
    print(f"load generator: {client}; batch: Python http.client processes")
    print(f"load average: {load_before:.2f} before, {load_after:.2f} after (2+ means a busy box)")
    print(latency_table([*results, batch_result], args.workers))
    ratio = submit_n.rps / trivial_n.rps if trivial_n.rps else float("nan")
    jobs_s = batch_result.rps * BATCH_SIZE
    verdict = "meets" if submit_n.p99_ms < GOAL_P99_MS else "MISSES"
    print()
    print(f"submit / trivial throughput ratio ({args.clients} clients): {ratio:.2f}")
    print(f"submit p99 {submit_n.p99_ms:.1f} ms: {verdict} the goal of < {GOAL_P99_MS:g} ms")
    verdict = "meets" if jobs_s >= GOAL_BATCH_JOBS_S else "MISSES"
    print(
        f"batch: {jobs_s:,.0f} jobs/s, {_f(batch_result.p50_ms, 0)} ms p50 per {BATCH_SIZE}-job "
        f"request: {verdict} the goal of >= {GOAL_BATCH_JOBS_S:,.0f} jobs/s"
    )
    print()
    for name, sqls in statements.items():
        print(f"SQL statements per {name} request: {len(sqls)}")
        for sql in sqls:
            print(f"    {_summarise(sql)}")


if __name__ == "__main__":
    main()
