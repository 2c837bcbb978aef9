"""A job's message as the dispatcher sends it (jobs.services.publishing) is the message Celery's
send_task sends for the same job: the same body, headers and properties, so workers, Flower and
the results admin see no difference. (The dispatcher builds it with the two calls send_task
makes, without the rest of send_task.)"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from typing import Any

import pytest
import redis
from celery import current_app
from django.conf import settings

from jobs.models import Job
from jobs.services.publishing import jobs_send

# Differ from message to message whatever sends it.
_PER_MESSAGE = {"delivery_tag", "published_at"}


def _send_task(job: Job, queue: str) -> None:
    """What jobs.services.publishing sent through send_task before it built messages itself."""
    from saas_platform.lib.db import connection

    options: dict[str, Any] = {
        "args": [str(job.id)],
        "argsrepr": f"['{job.id}'] tenant={connection.schema_name}",
        "task_id": str(job.task_id),
        "queue": queue,
        "declare": [],
        "retry": False,
        "priority": 9 - job.priority,
    }
    if job.time_limit_seconds is not None:
        options["time_limit"] = job.time_limit_seconds
    with current_app.producer_or_acquire() as producer:
        current_app.send_task(job.type, producer=producer, **options)


def _published(queue: str) -> dict[str, Any]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    prefix = os.environ["REDIS_KEY_PREFIX"]
    keys = client.keys(f"{prefix}{queue}*")
    assert len(keys) == 1, keys
    [raw] = client.lrange(keys[0], 0, -1)
    client.delete(*keys)
    envelope = json.loads(raw)
    for part in (envelope, envelope["headers"], envelope["properties"]):
        for name in _PER_MESSAGE:
            part.pop(name, None)
    envelope["properties"]["delivery_info"].pop("routing_key")
    return envelope


@pytest.mark.parametrize(
    ("job_type", "args", "time_limit"),
    [
        ("demo.add", {"x": 1, "y": 2}, None),
        ("demo.add", {"x": 1, "y": 2}, 7),  # a job's own, lower time limit
        ("demo.primes", {"limit": 10}, None),  # a soft time limit of its type
        ("email.send", {"to": "a@example.com", "subject": "s", "body": "b"}, None),  # ignore_result
        # Options a task may carry (its attributes, or CELERY_TASK_ANNOTATIONS) that send_task
        # also takes from it: set on demo.add for this case.
        ("demo.add+options", {"x": 1, "y": 2}, None),
    ],
)
def test_the_message_is_the_one_send_task_sends(tenant_db, monkeypatch, job_type, args, time_limit):
    # As in a worker, whose dispatcher sends them: the job types' tasks registered, with their
    # time limits (send_task adds those of a task it knows).
    current_app.loader.import_default_modules()
    current_app.finalize(auto=True)
    if job_type.endswith("+options"):
        job_type = job_type.removesuffix("+options")
        task = current_app.tasks[job_type]
        monkeypatch.setattr(task, "expires", 600, raising=False)
        monkeypatch.setattr(task, "delivery_mode", 1, raising=False)
        monkeypatch.setattr(task, "compression", "zlib", raising=False)
        monkeypatch.setattr(task, "_exec_options", None)  # Celery caches them per task
    job = Job(type=job_type, args=args, queue="default", priority=7)
    job.task_id = job.id
    job.time_limit_seconds = time_limit
    run = uuid.uuid4().hex[:8]
    with tenant_db.acme:
        _send_task(job, f"cmp-a-{run}")
        job.queue = f"cmp-b-{run}"
        assert jobs_send([job]) == [job.id]
    theirs, ours = _published(f"cmp-a-{run}"), _published(f"cmp-b-{run}")
    # send_task passes its options on to the publish call, so argsrepr (which it puts in the
    # headers, where workers and Flower read it) is also copied among the properties.
    assert theirs["properties"].pop("argsrepr") == ours["headers"]["argsrepr"]
    # An absolute time, made from the task's seconds at each send: moments apart.
    expires = [message["headers"].pop("expires") for message in (ours, theirs)]
    if expires[1] is None:
        assert expires[0] is None
    else:
        ours_at, theirs_at = (datetime.fromisoformat(at) for at in expires)
        assert abs((ours_at - theirs_at).total_seconds()) < 5
    assert ours == theirs
    headers = ours["headers"]
    assert headers["task"] == job_type
    assert headers["id"] == str(job.id)
    assert headers["tenant_id"] == tenant_db.acme.pk
    task = current_app.tasks[job_type]
    assert headers["timelimit"] == [time_limit or task.time_limit, task.soft_time_limit]
    assert headers["ignore_result"] is None  # the worker reads the task's own
    assert ours["properties"]["priority"] == 2
    if getattr(task, "expires", None):
        assert expires[0] is not None
        assert ours["properties"]["delivery_mode"] == 1
        assert ours["headers"].get("compression") == "application/x-gzip"
