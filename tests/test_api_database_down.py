"""With PostgreSQL down, API requests get 503 with the error envelope and Retry-After, and
nothing is accepted (CONTRACT.md "HTTP API": 503, a backing service is down).

Our own PostgreSQL (so it can be stopped), migrated and provisioned with the management
commands an operator uses, and a gunicorn web server on it (tests.stacks.DatabaseStack). Redis
stays the run's, under a key prefix of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Reply, http_call
from tests.stacks import DatabaseStack
from tests.workers import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

SLUG = "acme2"
HOST = f"{SLUG}.localhost"
DB_NAME = "saas_dbdown"
SUBMIT = {"type": "demo.add", "args": {"x": 1, "y": 2}}
# Failure detection, not speed: a refused connection fails at once (a few milliseconds), so a POST
# this slow with PostgreSQL down waited on the database. Far below gunicorn's 30 s worker timeout.
ANSWER_BOUND_SECONDS = 10


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[DatabaseStack]:
    built = DatabaseStack(pg_dir=tmp_path / "postgres", db_name=DB_NAME, slug=SLUG)
    try:
        built.provision()
        built.start_web()
        yield built
    finally:
        built.close()
    # Any error the web server logged besides those the test declared (Proc.allow) fails it.
    assert built.web is not None
    built.web.assert_no_unexpected_errors()


def _assert_unavailable(reply: Reply) -> None:
    assert reply.status == 503, (reply.status, reply.body[:500])
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    error = reply.json()["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert int(reply.headers["retry-after"]) > 0
    assert b"Traceback" not in reply.body


def test_with_postgres_down_requests_get_503_without_hanging_and_nothing_is_accepted(
    deployment: DatabaseStack,
) -> None:
    port, key = deployment.web_port, deployment.key
    accepted = 0

    def post(*, chunked: bool = False) -> Reply:
        return http_call(
            port, "POST", "/api/v1/jobs", host=HOST, key=key, body=SUBMIT, chunked=chunked
        )

    up = post()
    assert up.status == 202, up.body
    accepted += 1
    # gunicorn hands a chunked body over de-chunked and without Content-Length: it is read.
    chunked = post(chunked=True)
    assert chunked.status == 202, chunked.body
    accepted += 1
    job_id = up.json()["id"]

    # Each 503 is logged as an error: what was unavailable, then Django's record of the response.
    assert deployment.web is not None
    deployment.web.allow(
        r"saas_platform\.api database unavailable: ", r"django\.request Service Unavailable: /api/"
    )
    deployment.pg.stop()
    for attempt in range(3):
        down = post()
        _assert_unavailable(down)
        assert down.seconds < ANSWER_BOUND_SECONDS, f"a POST took {down.seconds:.1f}s"
        _assert_unavailable(http_call(port, "GET", f"/api/v1/jobs/{job_id}", host=HOST, key=key))
        _assert_unavailable(http_call(port, "GET", "/api/v1/jobs", host=HOST, key=key))
        # The public host too (no tenant lookup by host there; the key's lookup fails instead).
        _assert_unavailable(
            http_call(port, "POST", "/api/v1/jobs", host="localhost", key=key, body=SUBMIT)
        )
        if attempt == 0:
            time.sleep(1)
    assert deployment.web.alive, deployment.web.output()

    deployment.start_postgres()

    def serves() -> bool:
        reply = http_call(port, "GET", f"/api/v1/jobs/{job_id}", host=HOST, key=key)
        assert reply.status in (200, 503), (reply.status, reply.body[:500])
        return reply.status == 200

    wait_for(serves, timeout=30, what="the API to recover")
    again = post()
    assert again.status == 202, again.body
    accepted += 1
    assert deployment.job_count() == accepted
