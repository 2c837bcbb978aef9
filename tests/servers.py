"""Real server processes for outage tests: gunicorn, and a tiny HTTP client for them."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.workers import REPO, assert_no_unexpected_errors, wait_for

HOST = "acme.localhost"

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """A child process with its output collected; stopped with SIGTERM, then SIGKILL.

    `assert_no_unexpected_errors()` fails when its output holds an error record (ERROR,
    CRITICAL, a traceback) that no pattern given to `allow()` matches.
    """

    def __init__(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.expected_errors: list[re.Pattern[str]] = []
        self.process = subprocess.Popen(
            args,
            cwd=REPO,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self, last: int = 150) -> str:
        return f"--- {self.name} ---\n" + "".join(self.lines[-last:])

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def allow(self, *patterns: str) -> None:
        """Expect error records matching these (regular expressions searched in the record)."""
        self.expected_errors += [re.compile(pattern) for pattern in patterns]

    def assert_no_unexpected_errors(self) -> None:
        assert_no_unexpected_errors(self.name, list(self.lines), self.expected_errors)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        # Read what is still in the pipe: the last records are checked too.
        self._pump_thread.join(5)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def http_call(
    port: int,
    method: str,
    path: str,
    *,
    host: str = HOST,
    key: str | None = None,
    body: Any = None,
    chunked: bool = False,
    timeout: float = 30,
) -> Reply:
    """One request on a fresh connection; `body` is JSON-encoded unless bytes."""
    headers = {"Host": host, "Accept": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    payload: Any = None
    if body is not None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
            payload = iter([payload[i : i + 4096] for i in range(0, len(payload), 4096)])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request(method, path, body=payload, headers=headers, encode_chunked=chunked)
        response = connection.getresponse()
        content = response.read()
        return Reply(
            status=response.status,
            headers={name.lower(): value for name, value in response.getheaders()},
            body=content,
            seconds=time.monotonic() - started,
        )
    finally:
        connection.close()


def start_web(env: Mapping[str, str], port: int) -> Proc:
    """gunicorn on 127.0.0.1:port (one sync worker, as in production); returns when it answers."""
    args = [
        GUNICORN, "saas_platform.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--timeout", "30", "--graceful-timeout", "5",
    ]  # fmt: skip
    web = Proc("web", args, env)

    def answers() -> bool:
        if not web.alive:
            raise AssertionError("web server exited\n" + web.output())
        try:
            return http_call(port, "GET", "/healthz", host="localhost", timeout=5).status == 200
        except OSError:
            return False

    try:
        wait_for(answers, timeout=60, what="the web server")
    except BaseException:
        web.stop()
        raise
    return web


@dataclass
class LiveWeb:
    """A running gunicorn; `origin(host)` is what a browser puts before a path."""

    port: int
    proc: Proc

    def origin(self, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}"
