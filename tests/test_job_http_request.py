"""The http.request job type: its argument schema, its outcomes, and a run on a real worker."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from saas_platform.lib.outbound_http import OutboundHTTPError

from jobs.catalogue import JobArgsError, JobContext, PermanentJobError, job_type_get
from jobs.catalogue.http_request import RESULT_BODY_BYTES, RetryableHTTPStatus
from tests.conftest import Actors
from tests.http_server import LocalServer
from tests.jobs_helpers import submit, wait_final
from tests.workers import WorkerProcess

JOB_TYPE = job_type_get("http.request")
CONTEXT = JobContext(job_id="test", attempt=1, schema_name="acme", report_progress=lambda p: None)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as local:
        yield local


@pytest.fixture(autouse=True)
def _loopback_allowed() -> Iterator[None]:
    with override_settings(
        OUTBOUND_HTTP_ALLOW_PRIVATE=False, OUTBOUND_HTTP_ALLOWED_NETWORKS=["127.0.0.1/32"]
    ):
        yield


def run(**args: Any) -> Any:
    return JOB_TYPE.run(CONTEXT, JOB_TYPE.validate_args(args))


# --- Arguments -----------------------------------------------------------------------------------


def test_it_accepts_a_full_request() -> None:
    JOB_TYPE.validate_args(
        {
            "method": "POST",
            "url": "https://example.com/hook?x=1",
            "headers": {"Content-Type": "application/json", "Authorization": "Bearer t"},
            "body": '{"a": 1}',
            "timeout_seconds": 2.5,
        }
    )


@pytest.mark.parametrize(
    "args",
    [
        {"url": "https://example.com/"},
        {"method": "GET"},
        {"method": "TRACE", "url": "https://example.com/"},
        {"method": "get", "url": "https://example.com/"},
        {"method": "GET", "url": "ftp://example.com/"},
        {"method": "GET", "url": "file:///etc/passwd"},
        {"method": "GET", "url": "https://example.com/a b"},
        {"method": "GET", "url": "https://example.com/" + "a" * 2048},
        {"method": "GET", "url": "https://example.com/", "extra": 1},
        {"method": "GET", "url": "https://example.com/", "headers": {"Host": "intranet"}},
        {"method": "GET", "url": "https://example.com/", "headers": {"hOsT": "intranet"}},
        {"method": "GET", "url": "https://example.com/", "headers": {"Content-Length": "1"}},
        {"method": "GET", "url": "https://example.com/", "headers": {"Transfer-Encoding": "x"}},
        {"method": "GET", "url": "https://example.com/", "headers": {"X-A": "1\r\nX-B: 2"}},
        {"method": "GET", "url": "https://example.com/", "headers": {"Bad Name": "1"}},
        {"method": "GET", "url": "https://example.com/", "headers": {"X-A": 1}},
        {"method": "GET", "url": "https://example.com/", "headers": {"X-A": "v" * 8193}},
        {
            "method": "GET",
            "url": "https://example.com/",
            "headers": {f"X-{n}": "v" for n in range(51)},
        },
        {"method": "POST", "url": "https://example.com/", "body": "x" * 100_001},
        {"method": "POST", "url": "https://example.com/", "body": {"json": "object"}},
        {"method": "GET", "url": "https://example.com/", "timeout_seconds": 0},
        {"method": "GET", "url": "https://example.com/", "timeout_seconds": 61},
        {"method": "GET", "url": "https://example.com/", "timeout_seconds": "5"},
    ],
)
def test_it_refuses_invalid_args(args: dict[str, Any]) -> None:
    with pytest.raises(JobArgsError):
        JOB_TYPE.validate_args(args)


# --- Outcomes ------------------------------------------------------------------------------------


def test_it_returns_status_a_few_headers_the_body_and_the_time(server: LocalServer) -> None:
    result = run(
        method="POST",
        url=server.url("/echo"),
        headers={"X-Tenant-Header": "yes"},
        body="hello",
        timeout_seconds=5,
    )
    assert set(result) == {"status_code", "headers", "body", "body_truncated", "elapsed_ms"}
    assert result["status_code"] == 200
    assert result["headers"]["content-type"] == "application/json"
    seen = json.loads(result["body"])
    assert (seen["method"], seen["body"]) == ("POST", "hello")
    assert seen["headers"]["x-tenant-header"] == "yes"
    assert result["body_truncated"] is False
    assert isinstance(result["elapsed_ms"], int)
    json.dumps(result)  # it is stored as JSON


def test_only_the_listed_headers_are_kept(server: LocalServer) -> None:
    result = run(method="GET", url=server.url("/status/202"))
    assert result["headers"]["retry-after"] == "1"
    assert "x-other" not in result["headers"]


def test_a_long_body_is_truncated_and_flagged(server: LocalServer) -> None:
    result = run(method="GET", url=server.url(f"/big?bytes={RESULT_BODY_BYTES + 10}"))
    assert len(result["body"]) == RESULT_BODY_BYTES
    assert result["body_truncated"] is True


def test_a_binary_body_is_stored_without_nul_characters(server: LocalServer) -> None:
    # PostgreSQL's jsonb refuses \u0000.
    result = run(method="GET", url=server.url("/binary"))
    assert "\x00" not in result["body"]
    assert "bin" in result["body"]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_and_429_are_retried(server: LocalServer, status: int) -> None:
    with pytest.raises(RetryableHTTPStatus, match=f"HTTP {status}") as caught:
        run(method="GET", url=server.url(f"/status/{status}"))
    assert not isinstance(caught.value, PermanentJobError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_client_errors_fail_at_once(server: LocalServer, status: int) -> None:
    with pytest.raises(PermanentJobError, match=f"HTTP {status}"):
        run(method="GET", url=server.url(f"/status/{status}"))


def test_error_messages_show_the_origin_not_the_path_or_query(server: LocalServer) -> None:
    with pytest.raises(PermanentJobError) as caught:
        run(method="GET", url=server.url("/status/404?token=s3cret"))
    assert "s3cret" not in str(caught.value)
    assert f"127.0.0.1:{server.port}" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://127.0.0.2/",
    ],
)
def test_a_blocked_destination_fails_at_once(url: str) -> None:
    with pytest.raises(PermanentJobError, match="refused"):
        run(method="GET", url=url)


def test_loopback_is_blocked_without_the_operators_permission(server: LocalServer) -> None:
    with (
        override_settings(OUTBOUND_HTTP_ALLOWED_NETWORKS=[]),
        pytest.raises(PermanentJobError, match="loopback"),
    ):
        run(method="GET", url=server.url("/echo"))


def test_a_redirect_to_a_blocked_destination_fails_at_once(server: LocalServer) -> None:
    with pytest.raises(PermanentJobError, match="refused"):
        run(method="GET", url=server.url("/redirect?to=http://192.168.1.1/"))


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OutboundHTTPError) as caught:
        run(method="GET", url=f"http://127.0.0.1:{port}/")
    assert caught.value.retryable
    assert not isinstance(caught.value, PermanentJobError)


def test_a_timeout_is_retried(server: LocalServer) -> None:
    with pytest.raises(OutboundHTTPError, match="in time") as caught:
        run(method="GET", url=server.url("/slow?seconds=3"), timeout_seconds=1)
    assert caught.value.retryable


# --- On a real worker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback_worker(actors: Actors, django_db_blocker: Any) -> Iterator[WorkerProcess]:
    """A worker allowed to call 127.0.0.1 only (settings read OUTBOUND_HTTP_* from the env)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OUTBOUND_HTTP_ALLOWED_NETWORKS", "127.0.0.1/32")
        env.delenv("OUTBOUND_HTTP_ALLOW_PRIVATE", raising=False)
        with WorkerProcess(pool="prefork", concurrency=2) as worker:
            yield worker


@pytest.mark.worker
@pytest.mark.slow
def test_jobs_call_out_from_a_worker_retry_and_refuse(
    tenant_db: Actors, loopback_worker: WorkerProcess, server: LocalServer
) -> None:
    key = uuid.uuid4().hex
    ok = submit(
        tenant_db.acme, "http.request", {"method": "POST", "url": server.url("/echo"), "body": "hi"}
    )
    flaky = submit(
        tenant_db.acme,
        "http.request",
        {"method": "GET", "url": server.url(f"/flaky?key={key}&failures=1")},
    )
    # Loopback, but outside the worker's allowed 127.0.0.1/32.
    blocked = submit(
        tenant_db.acme,
        "http.request",
        {"method": "GET", "url": f"http://127.0.0.2:{server.port}/echo"},
    )
    # Refused for good: Celery logs the task's PermanentJobError.
    loopback_worker.allow(
        rf"http\.request\[{blocked.task_id}\] raised unexpected: PermanentJobError\('refused"
    )
    done = {job.id: job for job in wait_final(tenant_db.acme, [ok.id, flaky.id, blocked.id])}

    assert done[ok.id].status == "succeeded", (done[ok.id].error, loopback_worker.output())
    ok_result = done[ok.id].result
    assert isinstance(ok_result, dict)
    assert ok_result["status_code"] == 200
    assert json.loads(ok_result["body"])["body"] == "hi"

    assert (done[flaky.id].status, done[flaky.id].attempts) == ("succeeded", 2)
    flaky_result = done[flaky.id].result
    assert isinstance(flaky_result, dict)
    assert flaky_result["body"] == "ok after 2"

    assert (done[blocked.id].status, done[blocked.id].attempts) == ("failed", 1)
    assert "loopback" in done[blocked.id].error
