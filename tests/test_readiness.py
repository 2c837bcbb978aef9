"""/healthz and /readyz as an orchestrator sees them, with PostgreSQL or Redis stopped under a
web server of the test's own (tests.stacks); and what that web server sends to Sentry and writes
to its log meanwhile (the real SDK to a local sink, JSON log lines)."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Actors
from tests.sentry_sink import SentrySink
from tests.servers import Reply, http_call, start_web
from tests.stacks import DatabaseStack, RedisStack
from tests.workers import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

SLUG = "readyco"


def _probe(port: int, path: str) -> Reply:
    return http_call(port, "GET", path, host="localhost", timeout=15)


def _ready(port: int) -> bool:
    return _probe(port, "/readyz").status == 200


@pytest.fixture
def home() -> Iterator[Path]:
    # Not under pytest's tmp_path (tests/test_worker_database_down.py says why).
    path = Path(tempfile.mkdtemp(prefix="saas-readyz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_with_postgres_down_readyz_is_503_healthz_200_and_sentry_gets_no_secrets(home):
    secret = f"secret-{uuid.uuid4().hex}"
    stack = DatabaseStack(pg_dir=home / "postgres", db_name="saas_readyz", slug=SLUG)
    with SentrySink() as sink:
        try:
            stack.provision()
            env = {**stack.env, "SENTRY_DSN": sink.dsn, "LOG_FORMAT": "json"}
            stack.web = start_web(env, stack.web_port)
            stack.web.allow(r"database unavailable", r"Service Unavailable", r"not ready")
            port = stack.web_port
            assert _probe(port, "/readyz").json() == {"status": "ok"}
            stack.call("POST", "/jobs", {"type": "demo.add", "args": {"x": 1, "y": 2}})

            stack.pg.stop()
            down = _probe(port, "/readyz")
            assert down.status == 503
            [problem] = down.json()["problems"]
            assert problem.startswith("PostgreSQL: ")
            # Liveness does not depend on the database: restarting the web would not help.
            assert _probe(port, "/healthz").status == 200
            refused = http_call(
                port,
                "POST",
                "/api/v1/jobs",
                host=stack.host,
                key=stack.key,
                body={"type": "demo.fail", "args": {"message": secret}},
            )
            assert refused.status == 503
            request_id = refused.headers["x-request-id"]
            events = wait_for(
                lambda: [
                    e for e in sink.events() if e.get("tags", {}).get("request_id") == request_id
                ],
                timeout=20,
                what="the 503's event at the sink",
            )

            stack.start_postgres()
            wait_for(lambda: _ready(port), timeout=60, what="readyz to recover")
            lines = [json.loads(line) for line in stack.web.lines if line.startswith("{")]
        finally:
            stack.close()
        raw = sink.raw_bytes()

    assert all(event["level"] == "error" for event in events)
    # The web keeps the Django integration (workers drop it: saas_platform.observability.sentry).
    assert all("django" in event["sdk"]["integrations"] for event in events)
    # The request's key and body stay out of every envelope the web process sent.
    assert stack.key.encode() not in raw
    assert secret.encode() not in raw
    # Its log lines name the request; the request id is the one the client was given.
    logged = [line for line in lines if line.get("request_id") == request_id]
    assert any(line["level"] == "error" for line in logged), lines[-10:]


def test_with_redis_down_readyz_is_503_until_it_is_back(tenant_db: Actors, tmp_path: Path):
    stack = RedisStack(redis_dir=tmp_path / "redis")
    try:
        stack.start_redis()
        web = stack.start_web()
        web.allow(r"not ready")
        port = stack.web_port
        assert _ready(port)
        stack.stop_redis()
        down = _probe(port, "/readyz")
        assert down.status == 503
        assert [p.split(":")[0] for p in down.json()["problems"]] == ["Redis"]
        assert _probe(port, "/healthz").status == 200
        stack.start_redis()
        wait_for(lambda: _ready(port), timeout=30, what="readyz to recover")
    finally:
        stack.close()
    web.assert_no_unexpected_errors()
