"""`make run`'s body (`python -m saas_platform.run`) end to end, with the servers given by URL.

It migrates a database of its own, creates the demo tenant and prints how to sign in and a demo
API key; the key submits a job that the worker it started runs; the web server listens on
loopback only (the demo accounts' passwords are printed); Ctrl-C stops everything. The embedded
servers themselves are tested in test_embedded.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator

import psutil
import psycopg
import pytest
from psycopg import sql
from saas_platform.lib.service_urls import database_url_with_name

from tests.servers import Proc, free_port, http_call
from tests.workers import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

DB_NAME = f"saas_makerun_{os.getpid()}"


@pytest.fixture(scope="module")
def run_database() -> Iterator[str]:
    server = os.environ["DATABASE_URL"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DB_NAME)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
    yield database_url_with_name(server, DB_NAME)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
        )


def _non_loopback_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return None


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


def test_make_run_starts_everything_on_loopback_and_stops_on_ctrl_c(run_database):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": run_database,
        "REDIS_KEY_PREFIX": f"{os.environ['REDIS_KEY_PREFIX']}makerun:",
        "PORT": str(port),
    }
    env.pop("DEBUG", None)  # make run turns DEBUG on by default
    env.pop("TEST_DATABASE_NAME", None)
    run = Proc("make run", [sys.executable, "-m", "saas_platform.run"], env)
    try:
        wait_for(
            lambda: run.count("Ctrl-C stops everything") or not run.alive,
            timeout=240,
            what="make run to come up",
        )
        assert run.alive, run.output()
        output = "".join(run.lines)
        assert f"http://acme.localhost:{port}/" in output
        assert f"http://localhost:{port}/admin/" in output
        assert re.search(r"sign in as admin@acme\.example / \S+", output), output
        key = re.search(r"API key:\s+(tjp_\S+)", output)
        assert key is not None, output

        # The printed key works on the printed host, and the worker it started runs the job.
        submitted = http_call(
            port,
            "POST",
            "/api/v1/jobs",
            host="acme.localhost",
            key=key.group(1),
            body={"type": "demo.add", "args": {"x": 2, "y": 3}},
        )
        assert submitted.status == 202, submitted.body
        job_id = submitted.json()["id"]

        def finished() -> dict | None:
            job = http_call(
                port, "GET", f"/api/v1/jobs/{job_id}", host="acme.localhost", key=key.group(1)
            ).json()
            return job if job["status"] in ("succeeded", "failed") else None

        job = wait_for(finished, timeout=60, what="the demo job")
        assert (job["status"], job["result"]) == ("succeeded", 5)

        outside = _non_loopback_address()
        if outside is not None:
            assert _refused(outside, port), f"the web server answers on {outside}:{port}"

        children = psutil.Process(run.process.pid).children(recursive=True)
        assert len(children) >= 3  # web, worker (and its pool), beat
        run.process.send_signal(signal.SIGINT)
        run.process.wait(60)
        assert run.process.returncode == 0, run.output()
        time.sleep(0.5)
        assert not [child for child in children if child.is_running()], run.output()
    finally:
        run.stop()
