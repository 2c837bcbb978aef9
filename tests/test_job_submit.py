"""jobs.services.submission.job_submit / job_submit_many: validated and written all or nothing,
then announced to the dispatcher, whose turn (jobs.services.dispatch) sends the message."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections import Counter
from datetime import datetime, timedelta

import pytest
import redis
from django.db import connection
from django.utils import timezone
from saas_platform.lib.state_redis import state_redis

from jobs.catalogue import JobArgsError, UnknownJobType
from jobs.models import Job, JobStatus
from jobs.services.dispatch import inflight_key
from jobs.services.submission import (
    IdempotencyConflict,
    JobRequest,
    JobSubmitError,
    job_submit,
    job_submit_many,
)
from tests.jobs_helpers import job_in
from tests.schemas import schemas_holding

DAY = 24 * 60 * 60


class Broker:
    """The Redis lists behind the `default` queue, read directly (no consumer in this module).

    kombu keeps one list per priority step: the queue's own name for priority 0, then
    `<name>\\x06\\x16<step>` for the others (settings: priority_steps 0..9).
    """

    def __init__(self) -> None:
        self.client = redis.Redis.from_url(os.environ["REDIS_URL"], db=0)
        base = os.environ["REDIS_KEY_PREFIX"] + "default"
        self.keys = [base] + [f"{base}\x06\x16{step}" for step in range(1, 10)]
        self.start = self.snapshot()

    def snapshot(self) -> list[bytes]:
        return [raw for key in self.keys for raw in self.client.lrange(key, 0, -1)]

    def length(self) -> int:
        return sum(self.client.llen(key) for key in self.keys)

    def new_since(self, snapshot: list[bytes]) -> list[bytes]:
        added = Counter(self.snapshot()) - Counter(snapshot)
        return list(added.elements())

    def _remove(self, raw: bytes) -> int:
        for key in self.keys:
            if self.client.lrem(key, 1, raw):
                return 1
        return 0

    def take(self, raw: bytes) -> dict:
        """Remove one message from the queue and return it decoded (envelope, body)."""
        assert self._remove(raw) == 1
        message = json.loads(raw)
        message["decoded_body"] = json.loads(base64.b64decode(message["body"]))
        return message

    def cleanup(self) -> None:
        for raw in self.new_since(self.start):
            self._remove(raw)


@pytest.fixture
def broker(tenant_db):
    queue = Broker()
    yield queue
    queue.cleanup()


@pytest.fixture
def by(tenant_db):
    """A submitted_by unique to the test; its jobs are deleted afterwards, in every tenant."""
    who = f"test:{uuid.uuid4().hex[:12]}"
    # A clean line: jobs other tests left waiting or sent (no worker runs here) would be sent
    # first, or hold the tenant's concurrency slots.
    for tenant in (tenant_db.acme, tenant_db.globex):
        with tenant:
            Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.SCHEDULED]).update(
                status=JobStatus.CANCELLED
            )
        state_redis().delete(inflight_key(tenant.pk))
    yield who
    for tenant in (tenant_db.acme, tenant_db.globex):
        with tenant:
            Job.objects.filter(submitted_by=who).delete()
    connection.set_schema_to_public()


def _add(**options) -> JobRequest:
    return JobRequest(type="demo.add", args={"x": 1, "y": 2}, **options)


def _submit(request: JobRequest, by: str, **options) -> Job:
    return job_submit(request=request, submitted_by=by, **options)


def _assert_refused_and_nothing_happened(tenant, broker, by, submit, error, match=None):
    """`submit` raises `error`; no row is written in the tenant and no message is published."""
    with tenant:
        jobs_before = Job.objects.count()
        ours_before = set(Job.objects.filter(submitted_by=by).values_list("id", flat=True))
    queue_before = broker.snapshot()
    with tenant, pytest.raises(error, match=match) as excinfo:
        submit()
    with tenant:
        assert Job.objects.count() == jobs_before
        assert set(Job.objects.filter(submitted_by=by).values_list("id", flat=True)) == ours_before
    assert broker.snapshot() == queue_before
    return excinfo.value


# --- accepted --------------------------------------------------------------------------------


def _dispatch(tenant, queue: str = "default"):
    """One dispatcher turn for the tenant, as the dispatcher thread would take it."""
    from jobs.services.dispatch import tenant_dispatch_turn

    with tenant:
        return tenant_dispatch_turn(tenant_id=tenant.pk, queue=queue, room=100, alone=True)


def _ready(tenant, queue: str = "default") -> bool:
    from saas_platform.lib.state_redis import state_key, state_redis

    return state_redis().zscore(state_key("fair", queue, "ready"), tenant.pk) is not None


def test_a_valid_job_is_written_queued_and_announced_and_sent_once_by_the_dispatcher(
    tenant_db, broker, by
):
    before = broker.snapshot()
    with tenant_db.acme:
        count = Job.objects.count()
        job = _submit(_add(), by)
        assert Job.objects.count() == count + 1
        row = Job.objects.get(id=job.id)
    assert (row.type, row.args, row.status) == ("demo.add", {"x": 1, "y": 2}, JobStatus.QUEUED)
    assert (row.priority, row.queue, row.submitted_by) == (5, "default", by)
    assert row.run_at is None
    assert row.task_id == row.id
    # Submitting sends nothing: the job waits in the table and its tenant is ready.
    assert row.published_at is None
    assert broker.snapshot() == before
    assert _ready(tenant_db.acme)
    assert _dispatch(tenant_db.acme).sent >= 1
    assert job_in(tenant_db.acme, job.id).published_at is not None
    mine = [raw for raw in broker.new_since(before) if str(job.id) in raw.decode()]
    assert len(mine) == 1
    message = broker.take(mine[0])
    assert message["headers"]["task"] == "demo.add"
    assert message["headers"]["id"] == str(job.id)
    assert message["decoded_body"][0] == [str(job.id)]
    assert message["headers"]["eta"] is None
    assert _dispatch(tenant_db.acme).sent == 0  # once


def test_a_submissions_announcement_is_one_round_trip_to_redis(tenant_db, monkeypatch, by):
    # Billing, the reconciler's mark and the dispatcher's wake-up in one pipeline, and nothing
    # before it: a registered Lua script in a pipeline would first send SCRIPT EXISTS.
    sent: list[bytes] = []
    original = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(b"".join(command) if isinstance(command, list) else command)
        return original(self, command, check_health)

    with tenant_db.acme:
        _submit(_add(), by)  # warm: connections made, scripts known
        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
        _submit(_add(), by)
    assert len(sent) == 1, sent
    assert b"SCRIPT" not in sent[0]


def test_the_message_carries_the_active_tenant_in_its_headers(tenant_db, broker, by):
    for tenant in (tenant_db.acme, tenant_db.globex):
        before = broker.snapshot()
        with tenant:
            job = _submit(_add(), by)
        _dispatch(tenant)
        [raw] = [raw for raw in broker.new_since(before) if str(job.id) in raw.decode()]
        headers = broker.take(raw)["headers"]
        assert headers["id"] == str(job.id)
        assert headers["tenant_id"] == tenant.pk
        assert headers["tenant_schema"] == tenant.schema_name


def test_the_row_is_written_in_the_active_tenants_schema_only(tenant_db, broker, by):
    with tenant_db.globex:
        job = _submit(_add(), by)
    assert schemas_holding("jobs_job", "id", [job.id]) == {str(job.id): {"globex"}}
    with tenant_db.acme:
        assert not Job.objects.filter(id=job.id).exists()


def test_a_delayed_job_waits_scheduled_and_is_sent_when_due_without_an_eta(tenant_db, broker, by):
    before = broker.snapshot()
    started = timezone.now()
    with tenant_db.acme:
        job = _submit(_add(delay_seconds=60), by)
        row = Job.objects.get(id=job.id)
    assert row.status == JobStatus.SCHEDULED
    assert started + timedelta(seconds=59) <= row.run_at <= timezone.now() + timedelta(seconds=61)
    assert broker.snapshot() == before
    _dispatch(tenant_db.acme)
    assert job_in(tenant_db.acme, job.id).published_at is None  # not due yet
    with tenant_db.acme:
        Job.objects.filter(id=job.id).update(run_at=timezone.now() - timedelta(seconds=1))
    _dispatch(tenant_db.acme)
    sent = job_in(tenant_db.acme, job.id)
    assert (sent.status, sent.published_at is not None) == (JobStatus.QUEUED, True)
    [raw] = [raw for raw in broker.new_since(before) if str(job.id) in raw.decode()]
    # No broker ETA: a worker never holds a job waiting for its time.
    assert broker.take(raw)["headers"]["eta"] is None


def test_a_long_delay_is_scheduled_and_publishes_nothing(tenant_db, broker, by):
    before = broker.snapshot()
    with tenant_db.acme:
        job = _submit(_add(delay_seconds=15 * 60 + 5), by)
        row = Job.objects.get(id=job.id)
    assert row.status == JobStatus.SCHEDULED
    assert row.published_at is None
    assert broker.snapshot() == before


def test_a_run_at_in_the_future_is_scheduled_and_publishes_nothing(tenant_db, broker, by):
    before = broker.snapshot()
    run_at = timezone.now() + timedelta(hours=2)
    with tenant_db.acme:
        job = _submit(_add(run_at=run_at), by)
        row = Job.objects.get(id=job.id)
    assert (row.status, row.run_at) == (JobStatus.SCHEDULED, run_at)
    assert broker.snapshot() == before


def test_a_delay_of_exactly_365_days_is_accepted(tenant_db, broker, by):
    with tenant_db.acme:
        job = _submit(_add(delay_seconds=365 * DAY), by)
    assert job.status == JobStatus.SCHEDULED


@pytest.mark.parametrize("priority", [0, 9])
def test_the_priority_bounds_are_accepted(tenant_db, broker, by, priority):
    with tenant_db.acme:
        job = _submit(_add(priority=priority), by)
        assert Job.objects.get(id=job.id).priority == priority


# --- refused: nothing written, nothing published ---------------------------------------------


@pytest.mark.parametrize("job_type", ["demo.nope", "", "DEMO.ADD", "platform.schema_probe"])
def test_it_refuses_an_unknown_job_type(tenant_db, broker, by, job_type):
    _assert_refused_and_nothing_happened(
        tenant_db.acme,
        broker,
        by,
        lambda: _submit(JobRequest(type=job_type, args={"x": 1, "y": 2}), by),
        UnknownJobType,
    )


@pytest.mark.parametrize(
    ("args", "path", "says"),
    [
        ({"x": 1}, "(root)", "'y' is a required property"),
        ({"x": "1", "y": 2}, "x", "is not of type 'number'"),
        ({"x": 1, "y": 2, "z": 3}, "(root)", "'z' was unexpected"),
        ({"x": 1e16, "y": 2}, "x", "is greater than the maximum"),
        ({"x": 1, "y": -1e16}, "y", "is less than the minimum"),
        ({"x": 1, "y": 2, "sleep_ms": -1}, "sleep_ms", "is less than the minimum"),
        ({"x": 1, "y": 2, "sleep_ms": 1.5}, "sleep_ms", "is not of type 'integer'"),
        ([1, 2], "(root)", "is not of type 'object'"),
        (None, "(root)", "is not of type 'object'"),
        ("x=1&y=2", "(root)", "is not of type 'object'"),
    ],
)
def test_it_refuses_args_that_break_the_schema_saying_where(
    tenant_db, broker, by, args, path, says
):
    error = _assert_refused_and_nothing_happened(
        tenant_db.acme,
        broker,
        by,
        lambda: _submit(JobRequest(type="demo.add", args=args), by),
        JobArgsError,
    )
    assert any(d["path"] == path and says in d["message"] for d in error.details), error.details


def test_it_reports_every_broken_field(tenant_db, broker, by):
    error = _assert_refused_and_nothing_happened(
        tenant_db.acme,
        broker,
        by,
        lambda: _submit(JobRequest(type="demo.add", args={"x": "a", "y": "b"}), by),
        JobArgsError,
    )
    assert {d["path"] for d in error.details} == {"x", "y"}


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"delay_seconds": -1}, "invalid_delay"),
        ({"delay_seconds": 365 * DAY + 1}, "invalid_delay"),
        ({"delay_seconds": float("nan")}, "invalid_delay"),
        ({"run_at": datetime(2999, 1, 1, 12, 0)}, "invalid_run_at"),  # naive
        ({"run_at": datetime.now() + timedelta(hours=1)}, "invalid_run_at"),  # naive
        ({"run_at": "in 366 days"}, "invalid_run_at"),
        ({"run_at": "now", "delay_seconds": 10}, "invalid_schedule"),
        ({"priority": -1}, "invalid_priority"),
        ({"priority": 10}, "invalid_priority"),
        ({"time_limit_seconds": 0}, "invalid_time_limit"),
        ({"time_limit_seconds": 121}, "invalid_time_limit"),
    ],
    ids=lambda value: value if isinstance(value, str) else ",".join(value),
)
def test_it_refuses_invalid_options(tenant_db, broker, by, options, code):
    if options.get("run_at") == "in 366 days":
        options = {**options, "run_at": timezone.now() + timedelta(days=366)}
    if options.get("run_at") == "now":
        options = {**options, "run_at": timezone.now() + timedelta(seconds=10)}
    error = _assert_refused_and_nothing_happened(
        tenant_db.acme, broker, by, lambda: _submit(_add(**options), by), JobSubmitError
    )
    assert error.code == code


def test_it_refuses_to_submit_with_no_tenant_active(tenant_db, broker, by):
    connection.set_schema_to_public()
    before = broker.snapshot()
    with pytest.raises(RuntimeError, match="tenant active"):
        _submit(_add(), by)
    with pytest.raises(RuntimeError, match="tenant active"):
        job_submit_many(requests=[_add()], submitted_by=by)
    assert broker.snapshot() == before
    for tenant in (tenant_db.acme, tenant_db.globex, tenant_db.initech):
        with tenant:
            assert not Job.objects.filter(submitted_by=by).exists()


# --- batches: all or none --------------------------------------------------------------------


def test_a_valid_batch_writes_every_job_and_the_dispatcher_sends_those_due(tenant_db, broker, by):
    before = broker.snapshot()
    with tenant_db.acme:
        jobs = job_submit_many(
            requests=[_add(), _add(priority=1), _add(delay_seconds=DAY)], submitted_by=by
        )
        rows = {j.id: j.status for j in Job.objects.filter(submitted_by=by)}
    assert rows == {
        jobs[0].id: JobStatus.QUEUED,
        jobs[1].id: JobStatus.QUEUED,
        jobs[2].id: JobStatus.SCHEDULED,
    }
    assert broker.snapshot() == before
    _dispatch(tenant_db.acme)
    ours = {str(j.id) for j in jobs}
    published = [
        broker.take(raw)["headers"]
        for raw in broker.new_since(before)
        if json.loads(raw)["headers"]["id"] in ours
    ]
    assert sorted(h["id"] for h in published) == sorted(str(j.id) for j in jobs[:2])
    assert {h["tenant_schema"] for h in published} == {"acme"}


def test_a_batch_with_bad_args_writes_and_publishes_none_of_it(tenant_db, broker, by):
    requests = [_add(), _add(), JobRequest(type="demo.add", args={"x": 1}), _add()]
    error = _assert_refused_and_nothing_happened(
        tenant_db.acme,
        broker,
        by,
        lambda: job_submit_many(requests=requests, submitted_by=by),
        JobArgsError,
    )
    assert error.batch_index == 2


def test_a_batch_with_a_bad_option_writes_and_publishes_none_of_it(tenant_db, broker, by):
    requests = [_add(), _add(priority=42)]
    error = _assert_refused_and_nothing_happened(
        tenant_db.acme,
        broker,
        by,
        lambda: job_submit_many(requests=requests, submitted_by=by),
        JobSubmitError,
    )
    assert error.code == "invalid_priority"
    assert error.batch_index == 1


def test_a_batch_with_an_unknown_type_writes_and_publishes_none_of_it(tenant_db, broker, by):
    requests = [_add(), JobRequest(type="demo.nope", args={})]
    error = _assert_refused_and_nothing_happened(
        tenant_db.acme,
        broker,
        by,
        lambda: job_submit_many(requests=requests, submitted_by=by),
        UnknownJobType,
    )
    assert error.batch_index == 1


# --- idempotency -----------------------------------------------------------------------------


def test_the_same_key_and_request_returns_the_same_job(tenant_db, broker, by):
    key = f"idem-{uuid.uuid4()}"
    before = broker.snapshot()
    with tenant_db.acme:
        first = _submit(_add(), by, idempotency_key=key)
        second = _submit(_add(), by, idempotency_key=key)
        assert Job.objects.filter(idempotency_key=key).count() == 1
    assert second.id == first.id
    _dispatch(tenant_db.acme)
    assert len([raw for raw in broker.new_since(before) if str(first.id) in raw.decode()]) == 1


def test_the_same_key_with_another_request_conflicts_and_writes_nothing(tenant_db, broker, by):
    key = f"idem-{uuid.uuid4()}"
    with tenant_db.acme:
        first = _submit(_add(), by, idempotency_key=key)
    conflicting = JobRequest(type="demo.add", args={"x": 1, "y": 3})
    error = _assert_refused_and_nothing_happened(
        tenant_db.acme,
        broker,
        by,
        lambda: _submit(conflicting, by, idempotency_key=key),
        IdempotencyConflict,
    )
    assert error.code == "idempotency_conflict"
    assert error.details == {"job_id": str(first.id)}
    with tenant_db.acme:
        assert Job.objects.get(idempotency_key=key).args == {"x": 1, "y": 2}


def test_the_same_key_with_other_options_conflicts(tenant_db, broker, by):
    key = f"idem-{uuid.uuid4()}"
    with tenant_db.acme:
        _submit(_add(), by, idempotency_key=key)
        with pytest.raises(IdempotencyConflict):
            _submit(_add(priority=1), by, idempotency_key=key)
        assert Job.objects.filter(idempotency_key=key).count() == 1


def test_idempotency_keys_are_per_tenant(tenant_db, broker, by):
    key = f"idem-{uuid.uuid4()}"
    with tenant_db.acme:
        in_acme = _submit(_add(), by, idempotency_key=key)
    with tenant_db.globex:
        in_globex = _submit(
            JobRequest(type="demo.add", args={"x": 5, "y": 5}), by, idempotency_key=key
        )
    assert in_globex.id != in_acme.id
    holding = schemas_holding("jobs_job", "id", [in_acme.id, in_globex.id])
    assert holding == {str(in_acme.id): {"acme"}, str(in_globex.id): {"globex"}}


def test_an_insert_conflict_without_an_idempotency_key_is_not_taken_for_a_replay(
    tenant_db, monkeypatch
):
    # The lookup after a conflict once ran with `idempotency_key IS NULL`, which matches any job
    # submitted without a key, and returned that unrelated job as if it were this one.
    import django.db

    import jobs.services.submission as submission

    with tenant_db.acme:
        unrelated = job_submit(
            request=JobRequest(type="demo.add", args={"x": 1, "y": 1}), submitted_by="operator"
        )
        real_build = submission._build

        def colliding_build(*args, **kwargs):
            job = real_build(*args, **kwargs)
            job.id = unrelated.id  # the INSERT now fails on the primary key
            return job

        monkeypatch.setattr(submission, "_build", colliding_build)
        with pytest.raises(django.db.IntegrityError):
            job_submit(
                request=JobRequest(type="demo.add", args={"x": 2, "y": 2}), submitted_by="operator"
            )
