"""Real Celery worker processes for integration tests (never eager mode)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import redis
from django.conf import settings
from saas_platform.lib.service_urls import database_url_with_name
from saas_platform.lib.worker_liveness import unacked_transport_options

REPO = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))


# Worker log records start with the "plain" format's timestamp (settings.LOGGING; Celery does not
# take over the root logger); the lines that follow one, such as a traceback's, belong to it.
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
_ALARMS = (" ERROR ", "CRITICAL", "Traceback")
_INCARNATION_LINE = re.compile(r"worker incarnation (\S+)")


def log_records(lines: Iterable[str]) -> list[str]:
    """Process output grouped into log records (a record and its continuation lines)."""
    records: list[str] = []
    for line in lines:
        if records and not _RECORD_START.match(line):
            records[-1] += line
        else:
            records.append(line)
    return records


def unexpected_errors(lines: Iterable[str], expected: Iterable[re.Pattern[str]]) -> list[str]:
    """The error records (ERROR, CRITICAL, a traceback) that no `expected` pattern matches."""
    patterns = list(expected)
    return [
        record
        for record in log_records(lines)
        if any(alarm in record for alarm in _ALARMS)
        and not any(pattern.search(record) for pattern in patterns)
    ]


def assert_no_unexpected_errors(
    who: str, lines: Iterable[str], expected: Iterable[re.Pattern[str]]
) -> None:
    patterns = list(expected)
    unexpected = unexpected_errors(lines, patterns)
    if unexpected:
        shown = "".join(record[:3000] for record in unexpected[:10])
        raise AssertionError(
            f"{who} logged {len(unexpected)} unexpected error record(s) "
            f"(expected: {[p.pattern for p in patterns]}):\n{shown}"
        )


def worker_environment() -> dict[str, str]:
    """The test run's environment, pointed at the test database pytest-django created."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_with_name(
        os.environ["DATABASE_URL"], settings.DATABASES["default"]["NAME"]
    )
    env.pop("TEST_DATABASE_NAME", None)
    return env


class WorkerProcess:
    """`celery -A saas_platform worker` in a child process, stopped (SIGTERM, then SIGKILL).

    Leaving the `with` block fails the test when the worker logged an error (an ERROR or
    CRITICAL record, or a traceback) that the test did not expect: `expected_errors`, or
    `allow()` later, name them as regular expressions searched in the whole record.
    """

    def __init__(
        self,
        *,
        pool: str,
        concurrency: int,
        queues: str = "default",
        beat: bool = False,
        env: dict[str, str] | None = None,
        name: str | None = None,
        expected_errors: Iterable[str] = (),
    ) -> None:
        self.pool = pool
        self.queues = queues
        self.extra_env = env or {}
        # Spelled out rather than "%h", so tests can tell this worker's jobs from others'.
        self.nodename = f"{name or 'test-' + pool}-{os.getpid()}@{socket.gethostname()}"
        self.expected_errors = [re.compile(pattern) for pattern in expected_errors]
        self.args = [
            CELERY, "-A", "saas_platform", "worker", "-l", "INFO",
            "-P", pool, "-c", str(concurrency),
            "-n", self.nodename,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        if queues:  # "": every queue of CELERY_TASK_QUEUES, as a plain `celery worker` does
            self.args += ["-Q", queues]
        if beat:
            # Embedded beat with a schedule file of its own (DatabaseScheduler keeps it in the db).
            self.args += ["-B", "-s", os.path.join(tempfile.mkdtemp(), "beat-schedule")]
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)

    def __enter__(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            self.args,
            cwd=REPO,
            env={**worker_environment(), **self.extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread.start()
        if not self._ready.wait(60):
            self.stop()
            raise RuntimeError("worker did not start:\n" + self.output())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.assert_no_unexpected_errors()

    def wait_controllable(self, timeout: float = 30) -> None:
        """Until the worker answers a ping: "ready" is logged before its control consumer has
        subscribed to broadcasts, and a broadcast (a revoke) sent in between never reaches it
        (Redis pub/sub keeps nothing for a late subscriber)."""
        from saas_platform.celery_app import app

        wait_for(
            lambda: app.control.ping(destination=[self.nodename], timeout=0.5),
            timeout=timeout,
            what=f"{self.nodename} to answer a ping",
        )

    def allow(self, *patterns: str) -> None:
        """Expect log records matching these from now on (errors a test provokes on purpose)."""
        self.expected_errors += [re.compile(pattern) for pattern in patterns]

    def assert_no_unexpected_errors(self) -> None:
        assert_no_unexpected_errors(
            f"worker {self.nodename}", list(self.lines), self.expected_errors
        )

    def ran(self, worker: str) -> bool:
        """Whether a Job's `worker` ("<incarnation>:<pid>") names an incarnation of this worker.

        An incarnation is "<node name>#<random>" (saas_platform.lib.worker_liveness).
        """
        return worker.startswith(self.nodename + "#")

    @property
    def incarnation(self) -> str:
        """This boot's incarnation id, from the line worker_liveness logs before the pool starts."""
        for line in list(self.lines):
            found = _INCARNATION_LINE.search(line)
            if found:
                return found.group(1)
        raise AssertionError(f"worker {self.nodename} logged no incarnation:\n{self.output()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _pump(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if " ready." in line:
                self._ready.set()

    def output(self) -> str:
        return "".join(self.lines[-200:])

    def count(self, text: str) -> int:
        """How many lines of the worker's output so far hold `text`."""
        return sum(text in line for line in list(self.lines))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_everything(self) -> None:
        """SIGKILL the main process and its pool children at once: a worker dying whole."""
        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        for process in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        # Read what is still in the pipe: the last records are checked too.
        self._pump_thread.join(5)


def unacked_in_broker(incarnation: str) -> set[str]:
    """The task ids of the messages an incarnation holds unacknowledged in the broker (kombu's
    Redis hash for it: saas_platform.lib.worker_liveness.unacked_transport_options).

    For a dead incarnation, what is still there is waiting for the visibility timeout (hours).
    """
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    key = settings.REDIS_KEY_PREFIX + unacked_transport_options(incarnation)["unacked_key"]
    held: set[str] = set()
    for raw in client.hvals(key):
        message = json.loads(raw)[0]  # [message, exchange, routing key], as kombu stores it
        held.add(message["headers"]["id"])
    return held


def wait_for(condition: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
