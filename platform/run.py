"""`python -m saas_platform.run`: the whole platform in one terminal, the body of `make run`.

For development only (CONTRACT.md, "make run"); production runs each process on its own (see
deploy/). What it does, in order:

1. When DATABASE_URL is unset, start an embedded PostgreSQL with its data in `<repo>/.data/postgres`
   and export its URL; the same for REDIS_URL with `<repo>/.data/redis`. DEBUG defaults to true.
2. Run `manage.py collectstatic` (into STATIC_ROOT, default `<repo>/.data/static`, which the web
   server serves with DEBUG off), `manage.py migrate` (every schema), then `manage.py demo_setup`,
   which idempotently creates the demo tenant `acme`, its admin, an operator account and a demo
   API key and prints them.
3. Start web (`manage.py runserver $BIND_ADDRESS:$PORT`; loopback and 8000 by default: the
   demo accounts have known passwords, so nothing listens beyond this machine unless asked), worker
   (`celery -A saas_platform worker`) and beat (`celery -A saas_platform beat`: the settings'
   tenant-aware scheduler, jobs.schedules.beat, for every tenant's schedules) with the same
   environment, each output line prefixed with the process name, and print the portal and
   operator admin URLs once the web server answers.
   With FLOWER=1 (`make run FLOWER=1`) it also starts Flower on port 5555 (FLOWER_PORT), the
   workers sending the task events it shows.
4. Ctrl-C, SIGTERM or SIGHUP stops the processes (SIGTERM, then SIGKILL after a grace period)
   and then the embedded servers. When a process exits on its own, everything stops and the exit
   is non-zero.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".data"
GRACE_SECONDS = 10.0  # a worker's warm shutdown finishes its running tasks first
WEB_READY_TIMEOUT = 60.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_COLOURS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m")
_RESET = "\033[0m"


class Stop(Exception):
    """Raised in the main thread by SIGINT, SIGTERM or SIGHUP: shutdown runs in one place."""


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DEBUG", "true")
    env.setdefault("DJANGO_SETTINGS_MODULE", "saas_platform.settings")
    # Children write through a pipe; unbuffered, their lines show up when they happen.
    env["PYTHONUNBUFFERED"] = "1"
    try:
        port = int(env.get("PORT", "8000"))
    except ValueError:
        print(f"PORT must be a whole number, got {env['PORT']!r}", file=sys.stderr)
        return 2
    base_domain = env.get("BASE_DOMAIN", "localhost").strip().lower() or "localhost"
    bind = env.get("BIND_ADDRESS", "127.0.0.1").strip() or "127.0.0.1"
    flower = env.get("FLOWER", "").strip().lower() in ("1", "true", "yes", "on")
    if flower:
        env["CELERY_EVENTS"] = "true"  # Flower shows what the workers' task events tell it

    _install_signal_handlers()
    with ExitStack() as cleanup:
        try:
            # Step 1: backing services.
            if not env.get("DATABASE_URL"):
                env["DATABASE_URL"] = cleanup.enter_context(_embedded("postgres"))
            if not env.get("REDIS_URL"):
                env["REDIS_URL"] = cleanup.enter_context(_embedded("redis"))

            # Step 2: static files, schema and demo data. Their output goes straight to the
            # terminal.
            steps = (
                ["collectstatic", "--noinput"],
                ["migrate"],
                ["demo_setup", "--port", str(port)],
            )
            for command in steps:
                code = _manage(command, env)
                if code != 0:
                    print(f"manage.py {command[0]} failed with exit code {code}", file=sys.stderr)
                    return code

            # Step 3: the processes.
            celery = _celery_command()
            group = ProcessGroup(env)
            cleanup.callback(group.stop)
            group.start(
                "web",
                [sys.executable, "manage.py", "runserver", f"{bind}:{port}", "--noreload"],
            )
            group.start("worker", [*celery, "-A", "saas_platform", "worker", "-l", "INFO"])
            group.start("beat", [*celery, "-A", "saas_platform", "beat", "-l", "INFO"])
            flower_port = env.get("FLOWER_PORT", "5555")
            if flower:
                group.start(
                    "flower",
                    [*celery, "-A", "saas_platform", "flower", f"--address={bind}",
                     f"--port={flower_port}"],
                )  # fmt: skip
            if group.wait_for_port(_reachable(bind), port, WEB_READY_TIMEOUT):
                group.say(
                    "run",
                    f"tenant portal:  http://acme.{base_domain}:{port}/\n"
                    f"operator admin: http://{base_domain}:{port}/admin/\n"
                    + (f"flower:         http://{bind}:{flower_port}/\n" if flower else "")
                    + "Ctrl-C stops everything.",
                )

            # Step 4: run until a signal or until a process ends on its own.
            dead = group.wait_for_exit()
            group.say("run", f"{dead.name} exited with code {dead.returncode}; stopping everything")
            code = dead.returncode
            # Killed by signal N reads as 128+N, as in a shell; a clean exit is still a failure.
            return 128 - code if code < 0 else code or 1
        except (Stop, KeyboardInterrupt):
            print("\nstopping...", file=sys.stderr, flush=True)
            return 0
        except RuntimeError as error:
            # An embedded server that would not start explains itself (with its log tail).
            print(f"make run: {error}", file=sys.stderr, flush=True)
            return 1
        finally:
            # From here on a signal must not interrupt the shutdown half-way (an embedded server
            # left running); a second Ctrl-C only cuts the grace period short.
            _signals_mean_hurry()


def _reachable(bind: str) -> str:
    """Where to knock to see the web server up: the wildcard addresses are reached on loopback."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind  # noqa: S104


@contextmanager
def _embedded(kind: str) -> Iterator[str]:
    # Imported here: with both URLs set (as in production or CI with services), the embedded
    # servers' packages are never touched.
    from saas_platform.lib.embedded import start_postgres, start_redis

    start = start_postgres if kind == "postgres" else start_redis
    began = time.monotonic()
    service = start(DATA / kind)
    try:
        print(
            f"embedded {kind}: {service.url} (data and log in {service.data_dir}, "
            f"started in {time.monotonic() - began:.1f}s)",
            flush=True,
        )
        yield service.url
    finally:
        service.stop()


def _manage(command: list[str], env: dict[str, str]) -> int:
    # subprocess.run kills the child if Stop or KeyboardInterrupt interrupts the wait.
    return subprocess.run([sys.executable, "manage.py", *command], cwd=REPO, env=env).returncode


def _celery_command() -> list[str]:
    # The script next to this interpreter belongs to the same virtualenv; do not resolve the
    # symlink, which would lead to the base interpreter's bin directory.
    script = Path(sys.executable).parent / "celery"
    return [str(script)] if script.exists() else [sys.executable, "-m", "celery"]


def _install_signal_handlers() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stop(signal.Signals(signum).name)

    # SIGHUP: the terminal was closed. Its default (die on the spot) would leave the children,
    # which run in sessions of their own, and the embedded servers running.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)


_HURRY = threading.Event()


def _signals_mean_hurry() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        _HURRY.set()

    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    reader: threading.Thread

    @property
    def returncode(self) -> int:
        code = self.process.poll()
        return 0 if code is None else code


@dataclass
class ProcessGroup:
    """Child processes with prefixed output, stopped together (like honcho or foreman)."""

    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    width: int = 6
    _print_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, command: list[str]) -> None:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C reaches only us, and we stop the children in order;
            # signalling the group also reaches grandchildren (Celery's pool processes).
            start_new_session=True,
        )
        assert process.stdout is not None
        reader = threading.Thread(
            target=self._relay, args=(name, process.stdout), name=f"relay-{name}", daemon=True
        )
        reader.start()
        self.children.append(Child(name, process, reader))

    def say(self, name: str, text: str) -> None:
        for line in text.splitlines():
            self._write(name, line)

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._write(name, raw.decode(errors="replace").rstrip("\r\n"))
        stream.close()

    def _write(self, name: str, line: str) -> None:
        prefix = f"{name:<{self.width}} | "
        if sys.stdout.isatty():
            names = [child.name for child in self.children]
            colour = _COLOURS[names.index(name) % len(_COLOURS)] if name in names else ""
            prefix = f"{colour}{prefix}{_RESET}" if colour else prefix
        with self._print_lock:
            sys.stdout.write(prefix + line + "\n")
            sys.stdout.flush()

    def wait_for_port(self, host: str, port: int, timeout: float) -> bool:
        """True once something accepts connections on the port; False if a child died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(child.process.poll() is not None for child in self.children):
                return False
            try:
                with socket.create_connection((host, port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.2)
        self._write("run", f"the web server did not answer on port {port} within {timeout:.0f}s")
        return False

    def wait_for_exit(self) -> Child:
        while True:
            for child in self.children:
                if child.process.poll() is not None:
                    child.reader.join(timeout=2)  # let its last words reach the terminal
                    return child
            time.sleep(0.2)

    def stop(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        # A second Ctrl-C while stopping means "now": skip the rest of the grace period.
        while not _HURRY.is_set() and time.monotonic() < deadline:
            if all(child.process.poll() is not None for child in self.children):
                break
            time.sleep(0.1)
        # Also reaches grandchildren a child left behind when it exited.
        self._signal_all(signal.SIGKILL)
        for child in self.children:
            child.process.wait()
            child.reader.join(timeout=2)

    def _signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            # Nothing left of the group is fine.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, sig)


if __name__ == "__main__":
    sys.exit(main())
