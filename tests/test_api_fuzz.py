"""Fuzzing the JSON API (CONTRACT.md "HTTP API") against the OpenAPI document it serves.

1. Property-based, driven by /api/v1/openapi.json (schemathesis against the WSGI application
   in-process): the coverage phase (boundary values, missing and wrong-typed values, unexpected
   methods) and a seeded, bounded fuzzing phase, positive and negative, on every operation, for
   two tenants (acme and globex, each on its own host with its own key). Every schemathesis check
   is on: no 5xx, every status, content type, body and header as documented, invalid requests
   refused, valid ones accepted; and every 4xx is the error envelope. A run where the API refused
   everything would pass most checks, so the accepted (2xx) positive cases are counted per
   tenant and operation and must be a real share of them.
2. Hand-made hostile requests (10k-deep nesting, NUL, lone surrogates, 1e999, huge integers,
   wrong types, unknown fields, non-UTF-8, empty, oversized and chunked bodies...), each with the
   exact status it must get, the envelope, and no Job written.

What JSON Schema cannot say is filled in by the hooks, never by loosening a check: a job type's
`args` follow that type's own schema (GET /job-types), `run_at` is at most 365 days ahead, a
cursor is one the API issued, and a job id is often a real job. The hooks change only values the
document already allows, so a positive case stays positive and a negative one negative. (For
time, a batch of more than 50 jobs is cut to 50.)
"""

from __future__ import annotations

import io
import itertools
import json
import re
import sys
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import schemathesis
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from saas_platform.celery_app import app
from schemathesis.checks import CHECKS, CheckContext

from jobs.api import MAX_BATCH
from jobs.catalogue import catalogue
from jobs.models import FINAL_STATUSES, Job, JobStatus, Schedule
from jobs.schedules.services import schedule_delete
from jobs.selectors import cursor_encode
from jobs.services.submission import MAX_DELAY, JobRequest, job_submit
from jobs.services.transitions import job_cancel
from jobs.services.workflows import StepRequest, input_fits, workflow_submit
from tests.conftest import Actors

HOST = "acme.localhost"
TENANTS = ("acme", "globex")
OPENAPI = "/api/v1/openapi.json"
SEED = 20240601
# Fuzzing-phase examples per operation and tenant (the coverage phase generates the cases the
# schema defines, whatever this says). About 30 s for the whole file on 2 cores.
MAX_EXAMPLES = 25
MIB = 1024 * 1024
BATCH_KEPT = 50


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


# Checks left out, each with the reason (none: every check holds). Three are on but have
# nothing to look at here: use_after_free and ensure_resource_availability follow sequences of
# calls (the stateful phase), object_level_authorization needs identities configured in
# schemathesis; another_tenants_job_is_not_found below does the cross-tenant part.
EXCLUDED_CHECKS: dict[str, str] = {}

CONFIG = {
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
        # Sequences of calls need links in the document, which ninja does not write.
        "stateful": {"enabled": False},
    },
    "checks": {"enabled": True, **{name: {"enabled": False} for name in EXCLUDED_CHECKS}},
}


def _load_schema() -> Any:
    """The OpenAPI document as the application serves it (on the public host: no database)."""
    from saas_platform.wsgi import application

    config = schemathesis.Config.from_dict(CONFIG)
    return schemathesis.openapi.from_wsgi(OPENAPI, application, config=config)


# Loaded at collection: schemathesis' lazy `from_fixture` loader does not work with pytest 9
# (it reads the removed `Node._nodeid`).
schema = _load_schema()


@dataclass
class FuzzState:
    started: datetime
    owners: dict[str, str] = field(default_factory=dict)  # job id -> tenant, of jobs made here
    keys: dict[str, str] = field(default_factory=dict)  # tenant -> its API key
    actors: Any = None
    # (tenant, operation, positive?) -> statuses answered
    answers: dict[tuple[str, str, bool], Counter[int]] = field(default_factory=dict)


STATE = FuzzState(started=timezone.now())


def _stable_int(value: Any) -> int:
    """A number derived from a generated value, the same in every run (hash() is salted)."""
    return zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode())


# Valid args per job type, one picked per case from what was generated.


def _fit_args(item: dict[str, Any]) -> dict[str, Any]:
    """A submission whose args fit its job type's schema, and whose run_at is within reach."""
    name = item.get("type")
    job_type = catalogue().get(name) if isinstance(name, str) else None
    args = item.get("args", {})
    if job_type is not None and isinstance(args, dict) and not job_type.validator.is_valid(args):
        # Each job type's own examples (jobs.catalogue): a new type needs nothing here.
        choices = list(job_type.examples)
        item = {**item, "args": choices[_stable_int(args) % len(choices)]}
    run_at = item.get("run_at")
    if isinstance(run_at, str):
        try:
            when = datetime.fromisoformat(run_at)
        except ValueError:
            return item  # not a date-time: negative on purpose
        if timezone.is_aware(when) and when - timezone.now() > MAX_DELAY - timedelta(days=1):
            ahead = timedelta(seconds=_stable_int(run_at) % int(MAX_DELAY.total_seconds() * 0.9))
            item = {**item, "run_at": (timezone.now() + ahead).isoformat()}
    return item


def _fit_chain(steps: list[Any]) -> list[Any]:
    """A chain that type-checks: a later step whose type takes no input, or not the previous
    step's result, becomes one that does (another name from the document's enum), and each
    step's args fit (a later step's as submitted, without `input`: jobs.catalogue)."""
    fitted: list[Any] = []
    previous = None
    for step in steps:
        name = step.get("type") if isinstance(step, dict) else None
        job_type = catalogue().get(name) if isinstance(name, str) else None
        if job_type is None:
            fitted.append(step)  # negative on purpose, or nothing to fit
            previous = None
            continue
        valid = job_type.validator.is_valid
        if previous is not None:
            if job_type.input_schema is None or not input_fits(
                previous.result_schema, job_type.input_schema
            ):
                fits = sorted(
                    other.name
                    for other in catalogue().values()
                    if other.input_schema is not None
                    and input_fits(previous.result_schema, other.input_schema)
                )
                job_type = catalogue()[fits[_stable_int(name) % len(fits)]]
                step = {**step, "type": job_type.name}
            assert job_type.before_input_validator is not None
            valid = job_type.before_input_validator.is_valid
        args = step.get("args", {})
        if isinstance(args, dict) and not valid(args):
            choices = [example for example in job_type.examples if valid(example)]
            step = {**step, "args": choices[_stable_int(args) % len(choices)]}
        fitted.append(step)
        previous = job_type
    return fitted


# What the document cannot say about a schedule (one timing of three, a cron expression and a zone
# that exist, the plan's shortest interval, a free name and monitor), made true of a valid case.
_CRONS = ("*/15 * * * *", "0 3 * * *", "30 2 * * 1-5", "0 0 1 * *", "0 */6 * * 0,6")
_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
_TIMINGS = ("cron", "interval_seconds", "run_at")
# Both tenants' plans allow it (free: every 300 s at most).
_SHORTEST_INTERVAL = 300
_schedule_names = itertools.count()


def _fit_schedule(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    seed = _stable_int(body)
    present = [name for name in _TIMINGS if body.get(name) is not None]
    body = {name: value for name, value in body.items() if name not in _TIMINGS}
    if present or creating:
        timing = present[seed % len(present)] if present else _TIMINGS[seed % 3]
        if timing == "cron":
            body["cron"] = _CRONS[seed % len(_CRONS)]
        elif timing == "interval_seconds":
            # Whole minutes, which a schedule with a Sentry monitor needs.
            body["interval_seconds"] = _SHORTEST_INTERVAL + 60 * (seed % 1440)
        else:
            body["run_at"] = (timezone.now() + timedelta(seconds=60 + seed % 86_400)).isoformat()
    if body.get("timezone") is not None:
        body["timezone"] = _ZONES[seed % len(_ZONES)]
    if body.get("jitter_seconds"):
        body["jitter_seconds"] = seed % 60  # never past the next occurrence
    if isinstance(body.get("name"), str):
        body["name"] = f"fuzz-{next(_schedule_names)}"
    if body.get("monitor_slug"):
        # A free slug, and only beside a timing Sentry Crons can follow (not a one-off).
        followed = body.get("cron") is not None or body.get("interval_seconds") is not None
        body["monitor_slug"] = f"fuzz-{next(_schedule_names)}" if followed else ""
    if isinstance(body.get("type"), str) and body["type"] not in catalogue():
        body["type"] = sorted(catalogue())[seed % len(catalogue())]
    return _fit_args(body) if "type" in body else body


def _issued_cursor(value: str) -> str:
    """A cursor as the API issues them (for a job that need not exist)."""
    seed = _stable_int(value)
    job = Job(id=uuid.UUID(int=seed), created_at=timezone.now() - timedelta(seconds=seed % 86400))
    return cursor_encode(job)


_drawn_keys = itertools.count()


def _fresh_idempotency_key(case: Any) -> None:
    """Generated Idempotency-Keys come from a small pool ("0", "status"), in the coverage phase
    as much as in fuzzing: drawn again with another body they are a 409 nearly every time. Three
    in four get a suffix that makes them new, so valid requests are mostly accepted ones; the
    rest still meet the 409."""
    headers = case.headers
    key = headers.get("Idempotency-Key") if headers else None
    if isinstance(key, str) and re.fullmatch(r"[\x21-\x7e]{1,200}", key):
        drawn = next(_drawn_keys)
        if drawn % 4:
            headers["Idempotency-Key"] = f"{key}-{drawn}"


@schema.hook
def map_case(ctx: Any, case: Any) -> Any:
    body = case.body
    label = ctx.operation.label if ctx.operation is not None else ""
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if negative and label.split(" ", 1)[-1].startswith("/api/v1/schedules"):
        pass  # left as generated: whatever made it invalid must still be there
    elif isinstance(body, dict) and label.split(" ", 1)[-1].startswith("/api/v1/schedules"):
        case.body = _fit_schedule(body, creating=label == "POST /api/v1/schedules")
    elif isinstance(body, dict) and "type" in body:
        case.body = _fit_args(body)
    elif isinstance(body, dict) and isinstance(body.get("jobs"), list):
        jobs = body["jobs"]
        if BATCH_KEPT < len(jobs) <= MAX_BATCH:
            # Time, not meaning: a 1000-job batch takes seconds to accept and publish, and
            # test_a_batch_of_1000_is_accepted proves the limit. A longer one stays as it is.
            jobs = jobs[:BATCH_KEPT]
        case.body = {**body, "jobs": [_fit_args(j) if isinstance(j, dict) else j for j in jobs]}
    elif isinstance(body, dict) and isinstance(body.get("steps"), list):
        case.body = {**body, "steps": _fit_chain(body["steps"])}
    query = case.query
    if isinstance(query, dict) and isinstance(query.get("cursor"), str) and query["cursor"]:
        cursor = query["cursor"]
        if len(cursor) <= 200 and "\x00" not in cursor:
            case.query = {**query, "cursor": _issued_cursor(cursor)}
    return case


# Path ids the fuzzing phase draws besides made-up ones: a job of the tenant under test in
# each state (made just before the request, so cancel and retry meet every state however
# often they are drawn), or one of the other tenant's. Resolved in the test, which knows the
# tenant; generation does not.
TARGETS = ("target-queued", "target-failed", "target-cancelled", "target-other-tenant")


# The same for workflows: one of the tenant's in each state, or the other tenant's.
WORKFLOW_TARGETS = (
    "workflow-running", "workflow-failed", "workflow-cancelled", "workflow-other-tenant",
)  # fmt: skip
# Schedules' integer ids are drawn as generated (targets for them are not wired: the hook's
# choices did not reach the positive cases), so their id operations meet made-up ids; their
# success and the other tenant's 404 are tested in test_api_schedules.py.
_ID_TARGETS = {"job_id": TARGETS, "workflow_id": WORKFLOW_TARGETS}


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
    for name, targets in _ID_TARGETS.items():
        if isinstance(path_parameters, dict) and name in path_parameters:
            choices = [*targets, path_parameters[name]]
            return st.sampled_from(choices).map(lambda i, name=name: {**path_parameters, name: i})
    return st.just(path_parameters)


def _job_made_now(owner: Any, status: str) -> str:
    with owner:
        job = job_submit(
            request=JobRequest(type="demo.add", args={"x": 1, "y": 1}), submitted_by="fuzz"
        )
        if status != JobStatus.QUEUED:
            Job.objects.filter(id=job.id).update(status=status, error=status)
    STATE.owners[str(job.id)] = owner.schema_name
    return str(job.id)


def _workflow_made_now(owner: Any, status: str) -> str:
    steps = [StepRequest("demo.add", {"x": 1, "y": 1}), StepRequest("demo.add", {"y": 1})]
    with owner:
        workflow = workflow_submit(steps=steps, submitted_by="fuzz")
        if status != "running":
            # Its first step's job ended that way: the workflow reads so.
            Job.objects.filter(workflow=workflow).update(status=status, error=status)
    STATE.owners[str(workflow.id)] = owner.schema_name
    return str(workflow.id)


def _aim_workflow(case: Any, tenant: str, actors: Actors) -> None:
    target = (case.path_parameters or {}).get("workflow_id")
    if target not in WORKFLOW_TARGETS:
        return
    if target == "workflow-other-tenant":
        owner = getattr(actors, "globex" if tenant == "acme" else "acme")
        status = "running"
    else:
        owner, status = getattr(actors, tenant), target.removeprefix("workflow-")
    case.path_parameters = {
        **case.path_parameters,
        "workflow_id": _workflow_made_now(owner, status),
    }


def _schedules_clear() -> None:
    for schedule in Schedule.objects.all():
        schedule_delete(schedule=schedule)


def _aim(case: Any, tenant: str, actors: Actors) -> None:
    """Put a real job (workflow, schedule) id where the case names a target."""
    _aim_workflow(case, tenant, actors)
    target = (case.path_parameters or {}).get("job_id")
    if target not in TARGETS:
        return
    if target == "target-other-tenant":
        owner = getattr(actors, "globex" if tenant == "acme" else "acme")
        status = JobStatus.QUEUED
    else:
        owner, status = getattr(actors, tenant), target.removeprefix("target-")
    case.path_parameters = {**case.path_parameters, "job_id": _job_made_now(owner, status)}


def _tenant_of(response: schemathesis.Response) -> str:
    return (response.request.url or "").split("//", 1)[-1].split(".", 1)[0]


@schemathesis.check
def another_tenants_job_is_not_found(
    ctx: CheckContext, response: schemathesis.Response, case: Any
) -> None:
    """With its own key, a tenant gets a 404 for the other's job, whatever the operation."""
    parameters = case.path_parameters or {}
    named = parameters.get("job_id", parameters.get("workflow_id", parameters.get("schedule_id")))
    owner = STATE.owners.get(str(named))
    tenant = _tenant_of(response)
    own_key = response.request.headers.get("Authorization") == f"Bearer {STATE.keys.get(tenant)}"
    if owner is not None and owner != tenant and own_key:
        assert response.status_code == 404, (tenant, owner, response.status_code)


@schema.hook
def after_call(ctx: Any, case: Any, response: schemathesis.Response) -> None:
    """Tally every answer, before the checks (a failing case counts too)."""
    tenant = _tenant_of(response)
    positive = case.meta is not None and not case.meta.generation.mode.is_negative
    answers = STATE.answers.setdefault((tenant, case.operation.label, positive), Counter())
    answers[response.status_code] += 1
    if case.operation.label == "POST /api/v1/schedules" and response.status_code == 201:
        # Not left to take the free plan's 5 places, nor for a later beat to run.
        with getattr(STATE.actors, tenant):
            _schedules_clear()


@pytest.fixture(scope="module", autouse=True)
def _fuzz_jobs(actors: Actors, django_db_blocker: Any) -> Iterator[None]:
    """At the end, every job this module left unfinished is cancelled, so a later test's worker
    never runs them (nothing consumes the queue here)."""
    STATE.started = timezone.now()
    STATE.keys = {name: getattr(actors, f"{name}_key") for name in TENANTS}
    STATE.actors = actors
    yield
    with django_db_blocker.unblock():
        for name in TENANTS:
            with getattr(actors, name):
                _schedules_clear()
                # In one statement rather than job_cancel's revoke broadcast per job (hundreds
                # of them): the runner's claim refuses a cancelled job anyway.
                Job.objects.filter(created_at__gte=STATE.started).exclude(
                    status__in=FINAL_STATUSES
                ).update(status=JobStatus.CANCELLED, finished_at=timezone.now(), error="cancelled")
    # Their messages go too, so that a later module's worker does not spend its time refusing
    # them. No worker runs during this module, and the queue belongs to this test run.
    with app.connection_for_write() as connection:
        for queue in sorted({job_type.queue for job_type in catalogue().values()}):
            connection.default_channel.queue_purge(queue)


@schema.parametrize()
@pytest.mark.parametrize("tenant", TENANTS)
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
def test_the_api_answers_as_its_openapi_document_says(
    case: Any, tenant: str, tenant_db: Actors
) -> None:
    key = getattr(tenant_db, f"{tenant}_key")
    _aim(case, tenant, tenant_db)
    _fresh_idempotency_key(case)
    # The tenant's key, sent as explicit credentials, except in the cases about the key itself
    # (missing, malformed), which must reach the API as generated.
    negated = schema.is_security_param_negated(case)
    case.call_and_validate(
        base_url=f"http://{tenant}.localhost",
        headers=None if negated else {"Authorization": f"Bearer {key}"},
    )


def test_every_schemathesis_check_is_on() -> None:
    """A check turned off in CONFIG must be one of EXCLUDED_CHECKS, with its reason."""
    config = schema.config.checks_config_for()
    off = {
        check.__name__
        for check in CHECKS.get_all()
        if not config.get_by_name(name=check.__name__).enabled
    }
    assert off == set(EXCLUDED_CHECKS)


# Share of each operation's valid requests that must be accepted (2xx): all of them but a few,
# except where a 404 or 409 is the right answer to some (measured with the seed above: 50%
# of submissions, half the jobs read, a third of the cancels (2 of 9 since the schedules'
# operations joined the document and changed the draws), half the retries).
ACCEPTED_SHARE = {
    # An Idempotency-Key drawn again with another body: 409 (a quarter of them keep their
    # drawn key, see _fresh_idempotency_key; for a batch too).
    "POST /api/v1/jobs": 0.7,
    "POST /api/v1/jobs/batch": 0.7,
    # A made-up id or the other tenant's job: 404.
    "GET /api/v1/jobs/{job_id}": 0.3,
    # ...or a job in a state that does not allow it: 409.
    "POST /api/v1/jobs/{job_id}/cancel": 0.2,
    "POST /api/v1/jobs/{job_id}/retry": 0.3,
    # The same for workflows. Hypothesis draws the first target (a running workflow) most:
    # a retry of it is a 409 (measured with the seed: 2 retries of 16 accepted).
    "POST /api/v1/workflows": 0.7,
    "GET /api/v1/workflows/{workflow_id}": 0.3,
    "POST /api/v1/workflows/{workflow_id}/cancel": 0.25,
    "POST /api/v1/workflows/{workflow_id}/retry": 0.1,
    # Made-up ids only (see _ID_TARGETS): a 404 each time, which the other checks still judge.
    "GET /api/v1/schedules/{schedule_id}": 0.0,
    "PATCH /api/v1/schedules/{schedule_id}": 0.0,
    "DELETE /api/v1/schedules/{schedule_id}": 0.0,
}
OPERATIONS = [operation.ok().label for operation in schema.get_all_operations()]


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_real_share_of_the_valid_requests_was_accepted(tenant: str, operation: str) -> None:
    """Runs after the fuzz test above (pytest keeps the file's order) and reads its tally."""
    answers = STATE.answers.get((tenant, operation, True))
    assert answers, f"no valid request was sent to {operation} for {tenant}: was the fuzz test run?"
    accepted = sum(n for status, n in answers.items() if 200 <= status < 300)
    share = ACCEPTED_SHARE.get(operation, 0.8)
    assert accepted >= share * sum(answers.values()), dict(answers)


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
