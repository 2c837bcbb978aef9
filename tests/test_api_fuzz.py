"""Fuzzing the JSON API (CONTRACT.md "HTTP API"): never a 5xx, every 4xx is the error envelope.

1. Property-based, driven by the OpenAPI document the application serves at /api/v1/openapi.json
   (schemathesis against the WSGI application in-process, on acme's host with acme's key): the
   coverage phase (boundary values, missing and wrong-typed values, unexpected methods) and a
   seeded, bounded fuzzing phase, positive and negative, on every operation. Hooks steer part of
   the generated bodies to a real job type and part of the path ids to real jobs, so the 202 and
   409 paths are exercised too, not only the refusals.
2. Hand-made hostile requests (10k-deep nesting, NUL, lone surrogates, 1e999, huge integers,
   wrong types, unknown fields, non-UTF-8, empty, oversized and chunked bodies...), each with the
   exact status it must get, the envelope, and no Job written.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import schemathesis
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckContext, not_a_server_error

from jobs.models import FINAL_STATUSES, Job, JobStatus
from jobs.services.submission import JobRequest, job_submit
from jobs.services.transitions import job_cancel
from tests.conftest import Actors

HOST = "acme.localhost"
OPENAPI = "/api/v1/openapi.json"
SEED = 20240601
# Fuzzing-phase examples per operation (the coverage phase generates the cases the schema
# defines, whatever this says). About 20 s for the whole file on 2 cores.
MAX_EXAMPLES = 40
MIB = 1024 * 1024


# --- 1. Property-based, from the OpenAPI document ---------------------------------------------


@schemathesis.check
def error_envelope(ctx: CheckContext, response: schemathesis.Response, case: Any) -> None:
    """Every 4xx is {"error": {"code": str, "message": str, "details": ...}} (CONTRACT.md)."""
    if not 400 <= response.status_code < 500:
        return
    assert_envelope(response.content, response.status_code)


def assert_envelope(content: bytes, status: int) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except ValueError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    where = f"{status} without the error envelope: {content[:300]!r}"
    assert isinstance(error, dict), where
    assert set(error) == {"code", "message", "details"}, where
    assert isinstance(error["code"], str), where
    assert isinstance(error["message"], str), where
    return error


def _load_schema() -> Any:
    """The OpenAPI document as the application serves it (on the public host: no database)."""
    from saas_platform.wsgi import application

    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",  # positive and negative (invalid) inputs
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",  # no .hypothesis/ directory in the checkout
                "allow-x00": True,
            },
            "phases": {
                "examples": {"enabled": False},  # the document has no examples
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
        }
    )
    return schemathesis.openapi.from_wsgi(OPENAPI, application, config=config)


# Loaded at collection: schemathesis' lazy `from_fixture` loader does not work with pytest 9
# (it reads the removed `Node._nodeid`).
schema = _load_schema()


@dataclass
class FuzzState:
    started: datetime
    # Ids of real acme jobs (queued, failed, cancelled) that generated path ids are drawn from.
    job_ids: list[str] = field(default_factory=list)


STATE = FuzzState(started=timezone.now())
NUMBERS = st.integers(min_value=-(10**15), max_value=10**15) | st.floats(
    min_value=-1e15, max_value=1e15, allow_nan=False
)


def _as_demo_add(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    args = st.fixed_dictionaries({"x": NUMBERS, "y": NUMBERS})
    return args.map(lambda a: {**body, "type": "demo.add", "args": a})


@schema.hook
def flatmap_body(ctx: Any, body: Any) -> st.SearchStrategy[Any]:
    """Half of the submissions name a real job type with valid args (the rest stays as is)."""
    if isinstance(body, dict) and "type" in body:
        return st.just(body) | _as_demo_add(body)
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if isinstance(jobs, list) and jobs and all(isinstance(j, dict) for j in jobs):
        real = st.tuples(*(_as_demo_add(j) for j in jobs)).map(
            lambda items: {**body, "jobs": list(items)}
        )
        return st.just(body) | real
    return st.just(body)


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
    """Half of the job ids are real jobs of acme's, so cancel and retry meet every state."""
    if isinstance(path_parameters, dict) and "job_id" in path_parameters and STATE.job_ids:
        real = st.sampled_from(STATE.job_ids).map(lambda i: {**path_parameters, "job_id": i})
        return st.just(path_parameters) | real
    return st.just(path_parameters)


@pytest.fixture(scope="module", autouse=True)
def _fuzz_jobs(actors: Actors, django_db_blocker: Any) -> Iterator[None]:
    """Real jobs to aim at; at the end, every job this module left unfinished is cancelled, so
    a later test's worker never runs them (nothing consumes the queue here)."""
    with django_db_blocker.unblock(), actors.acme:
        STATE.started = timezone.now()
        made = [
            job_submit(
                request=JobRequest(type="demo.add", args={"x": n, "y": 1}), submitted_by="fuzz"
            )
            for n in range(3)
        ]
        Job.objects.filter(id=made[1].id).update(status=JobStatus.FAILED, error="boom")
        job_cancel(job=made[2])
        STATE.job_ids = [str(job.id) for job in made]
    yield
    with django_db_blocker.unblock(), actors.acme:
        leftovers = Job.objects.filter(created_at__gte=STATE.started).exclude(
            status__in=FINAL_STATUSES
        )
        for job in leftovers:
            job_cancel(job=job)


@schema.parametrize()
# tenant_db only unblocks the database and hands over the committed actors: nothing to reset.
# Generation-speed checks are off so a slow CI machine cannot fail the test on its own.
@settings(
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ]
)
def test_no_server_error_and_errors_are_enveloped(case: Any, tenant_db: Actors) -> None:
    case.call_and_validate(
        base_url=f"http://{HOST}",
        headers={"Authorization": f"Bearer {tenant_db.acme_key}"},
        checks=[not_a_server_error, error_envelope],
    )


# --- 2. Hand-made hostile requests ------------------------------------------------------------

VALID = {"type": "demo.add", "args": {"x": 1, "y": 2}}


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def _with(**fields: Any) -> bytes:
    return _json({**VALID, **fields})


def _nested(depth: int, opener: str, closer: str, leaf: str = "1") -> bytes:
    deep = opener * depth + leaf + closer * depth
    return b'{"type": "demo.add", "args": {"x": ' + deep.encode() + b', "y": 1}}'


@dataclass(frozen=True)
class Nasty:
    body: bytes
    status: int
    path: str = "/api/v1/jobs"
    headers: dict[str, Any] = field(default_factory=dict)


NASTY: dict[str, Nasty] = {
    # 400: not acceptable JSON
    "nesting-10k-arrays": Nasty(_nested(10_000, "[", "]"), 400),
    "nesting-10k-objects": Nasty(_nested(10_000, '{"a": ', "}"), 400),
    # MAX_DEPTH is 32: body, args, then 30 arrays around the number is one level too deep.
    "nesting-one-too-deep": Nasty(_nested(30, "[", "]"), 400),
    "nul-escaped": Nasty(b'{"type": "demo.add\\u0000", "args": {"x": 1, "y": 2}}', 400),
    "nul-in-key": Nasty(b'{"type": "demo.add", "args": {"x\\u0000": 1, "y": 2}}', 400),
    "nul-raw-byte": Nasty(b'{"type": "demo.add\x00", "args": {"x": 1, "y": 2}}', 400),
    "lone-surrogate-value": Nasty(b'{"type": "demo.add\\ud800", "args": {}}', 400),
    "lone-surrogate-key": Nasty(b'{"type": "demo.add", "args": {"\\udfff": 1}}', 400),
    "1e999": Nasty(b'{"type": "demo.add", "args": {"x": 1e999, "y": 2}}', 400),
    "-1e999": Nasty(b'{"type": "demo.add", "args": {"x": -1e999, "y": 2}}', 400),
    "NaN": Nasty(b'{"type": "demo.add", "args": {"x": NaN, "y": 2}}', 400),
    "Infinity": Nasty(b'{"type": "demo.add", "args": {"x": Infinity, "y": 2}}', 400),
    "int-5000-digits": Nasty(b'{"type": "demo.add", "args": {"x": ' + b"9" * 5000 + b"}}", 400),
    "non-utf8": Nasty(b'{"type": "demo.add\xff\xfe", "args": {"x": 1, "y": 2}}', 400),
    "utf16": Nasty(json.dumps(VALID).encode("utf-16"), 400),
    "truncated": Nasty(b'{"type": "demo.add", "args": {"x": 1,', 400),
    "trailing-garbage": Nasty(_json(VALID) + b" }", 400),
    "bad-content-length": Nasty(_json(VALID), 400, headers={"CONTENT_LENGTH": "abc"}),
    "idempotency-key-nul": Nasty(_json(VALID), 400, headers={"HTTP_IDEMPOTENCY_KEY": "a\x00"}),
    "idempotency-key-256": Nasty(_json(VALID), 400, headers={"HTTP_IDEMPOTENCY_KEY": "k" * 256}),
    # 413: too large
    "2MiB-with-content-length": Nasty(_with(args={"x": 1, "y": 2, "pad": "a" * 2 * MIB}), 413),
    "batch-2MiB": Nasty(_json({"jobs": [VALID] * 60_000}), 413, path="/api/v1/jobs/batch"),
    # 422: valid JSON, invalid values
    "nesting-at-the-limit": Nasty(_nested(29, "[", "]"), 422),
    "empty-body": Nasty(b"", 422),
    "body-null": Nasty(b"null", 422),
    "body-list": Nasty(b"[]", 422),
    "body-string": Nasty(b'"demo.add"', 422),
    "body-number": Nasty(b"42", 422),
    "int-400-digits-priority": Nasty(_with(priority=10**400), 422),
    "type-is-int": Nasty(_json({"type": 1, "args": {}}), 422),
    "type-empty": Nasty(_json({"type": "", "args": {}}), 422),
    "type-unknown": Nasty(_json({"type": "os.system", "args": {}}), 422),
    "args-is-list": Nasty(_json({"type": "demo.add", "args": [1, 2]}), 422),
    "args-is-string": Nasty(_json({"type": "demo.add", "args": "x=1"}), 422),
    "args-wrong-types": Nasty(_json({"type": "demo.add", "args": {"x": "1", "y": True}}), 422),
    "args-unknown-field": Nasty(_with(args={"x": 1, "y": 2, "z": 3}), 422),
    "unknown-field": Nasty(_with(prio=1), 422),
    "unknown-field-case": Nasty(_with(Type="demo.add"), 422),
    "priority-10": Nasty(_with(priority=10), 422),
    "priority-float": Nasty(_with(priority=1.5), 422),
    "priority-string": Nasty(_with(priority="high"), 422),
    "delay-negative": Nasty(_with(delay_seconds=-1), 422),
    "delay-over-a-year": Nasty(_with(delay_seconds=366 * 86400), 422),
    "delay-and-run-at": Nasty(_with(delay_seconds=5, run_at="2030-01-01T00:00:00Z"), 422),
    "run-at-naive": Nasty(_with(run_at="2030-01-01T00:00:00"), 422),
    "run-at-garbage": Nasty(_with(run_at="tomorrow"), 422),
    "run-at-year-9999": Nasty(_with(run_at="9999-12-31T23:59:59+00:00"), 422),
    "batch-empty": Nasty(_json({"jobs": []}), 422, path="/api/v1/jobs/batch"),
    "batch-1001": Nasty(_json({"jobs": [VALID] * 1001}), 422, path="/api/v1/jobs/batch"),
    "batch-one-bad": Nasty(
        _json({"jobs": [VALID, VALID, {"type": "demo.add", "args": {"x": "no"}}]}),
        422,
        path="/api/v1/jobs/batch",
    ),
    "batch-unknown-field-in-item": Nasty(
        _json({"jobs": [VALID, {**VALID, "extra": 1}]}), 422, path="/api/v1/jobs/batch"
    ),
    "batch-unknown-field": Nasty(_json({"jobs": [VALID], "all": True}), 422, "/api/v1/jobs/batch"),
}


def _acme_jobs(actors: Actors) -> int:
    with actors.acme:
        return Job.objects.count()


def _wsgi_call(environ: dict[str, Any]) -> tuple[int, bytes]:
    """Call the WSGI application with a hand-built environ (what a server would pass)."""
    from saas_platform.wsgi import application

    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(line)
        return lambda data: None

    result = application(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        close: Callable[[], None] | None = getattr(result, "close", None)
        if close is not None:
            close()
    return int(status[0].split()[0]), content


def _chunked_environ(body: bytes, key: str) -> dict[str, Any]:
    """A chunked POST as gunicorn hands it over: de-chunked input, no CONTENT_LENGTH."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/jobs",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": HOST,
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": HOST,
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "CONTENT_TYPE": "application/json",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


@pytest.mark.parametrize("name", list(NASTY))
def test_a_hostile_body_gets_its_exact_status_and_writes_nothing(
    tenant_db: Actors, name: str
) -> None:
    nasty = NASTY[name]
    client = Client(HTTP_HOST=HOST, HTTP_AUTHORIZATION=f"Bearer {tenant_db.acme_key}")
    before = _acme_jobs(tenant_db)
    response = client.generic(
        "POST", nasty.path, nasty.body, content_type="application/json", **nasty.headers
    )
    assert response.status_code == nasty.status, response.content[:500]
    assert_envelope(response.content, response.status_code)
    assert _acme_jobs(tenant_db) == before


@pytest.mark.parametrize(
    "query", ["type=%00", "cursor=%00", "status=%00", "%00=1", "limit=1e999", "cursor=%FF%FE"]
)
def test_a_hostile_query_is_refused_with_the_envelope(tenant_db: Actors, query: str) -> None:
    client = Client(HTTP_HOST=HOST, HTTP_AUTHORIZATION=f"Bearer {tenant_db.acme_key}")
    response = client.get(f"/api/v1/jobs?{query}")
    assert response.status_code in (400, 422), response.content[:500]
    assert_envelope(response.content, response.status_code)


def test_a_chunked_body_over_1_mib_without_content_length_is_413(tenant_db: Actors) -> None:
    before = _acme_jobs(tenant_db)
    body = _with(args={"x": 1, "y": 2, "pad": "a" * (MIB + MIB // 2)})
    status, content = _wsgi_call(_chunked_environ(body, tenant_db.acme_key))
    assert status == 413, content[:500]
    assert assert_envelope(content, status)["code"] == "too_large"
    assert _acme_jobs(tenant_db) == before


def test_a_small_chunked_body_is_read_not_taken_as_empty(tenant_db: Actors) -> None:
    status, content = _wsgi_call(_chunked_environ(_json(VALID), tenant_db.acme_key))
    assert status == 202, content[:500]
    with tenant_db.acme:
        job_cancel(job=Job.objects.get(id=json.loads(content)["id"]))


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/api/v1/jobs", 405),
        ("DELETE", "/api/v1/jobs/00000000-0000-0000-0000-000000000000", 405),
        ("GET", "/api/v1/no-such-endpoint", 404),
        ("GET", "/api/v1/jobs/a/b/c", 404),
    ],
)
def test_errors_outside_the_handlers_are_enveloped_too(
    tenant_db: Actors, method: str, path: str, status: int
) -> None:
    client = Client(HTTP_HOST=HOST, HTTP_AUTHORIZATION=f"Bearer {tenant_db.acme_key}")
    response = client.generic(method, path)
    assert response.status_code == status
    assert_envelope(response.content, status)
