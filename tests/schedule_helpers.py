"""Tenants of a schedule test's own (on a plan that allows short intervals) and a real beat
process, for tests of jobs.schedules."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.workers import CELERY, REPO, WorkerProcess, wait_for, worker_environment


def tenant_on_plan(slug: str, plan: str = "enterprise") -> tuple[Any, str]:
    """A tenant (created once per run) and a fresh API key with every scope."""
    from billing.models import Subscription
    from billing.services import tenant_create_on_plan
    from tenants.models import Tenant
    from tenants.services import apikey_create

    tenant = Tenant.objects.filter(schema_name=slug).first()
    if tenant is None:
        tenant = tenant_create_on_plan(slug=slug, name=slug.title(), plan_slug=plan).tenant
        Subscription.objects.filter(tenant=tenant).update(submit_rate_override="100000/s")
    return tenant, apikey_create(tenant=tenant, name=f"{slug} key").plaintext


class BeatProcess(WorkerProcess):
    """`celery -A saas_platform beat` (the settings' TenantBeatScheduler) in a child process,
    stopped and checked for unexpected errors as a WorkerProcess is."""

    def __init__(
        self,
        *,
        name: str = "beat",
        env: dict[str, str] | None = None,
        expected_errors: Iterable[str] = (),
    ) -> None:
        super().__init__(
            pool="solo", concurrency=1, queues="", name=name, env=env,
            expected_errors=expected_errors,
        )  # fmt: skip
        self.nodename = name
        self.args = [
            CELERY, "-A", "saas_platform", "beat", "-l", "INFO",
            "-s", os.path.join(tempfile.mkdtemp(), "beat-schedule"), "--pidfile=",
        ]  # fmt: skip

    def __enter__(self) -> BeatProcess:
        self.process = subprocess.Popen(
            self.args,
            cwd=REPO,
            env={**worker_environment(), **self.extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread.start()
        wait_for(lambda: self.count("beat: Starting") or not self.alive, timeout=60, what="beat")
        if not self.alive:
            raise RuntimeError("beat did not start:\n" + self.output())
        return self

    def kill(self) -> None:
        """SIGKILL: the beat dies without releasing its lease."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def fresh_tenant(slug: str) -> tuple[Any, str]:
    """tenant_on_plan, with the tenant's schedules and jobs of earlier tests removed."""
    from jobs.models import Job, Schedule
    from jobs.schedules.services import schedule_delete

    tenant, key = tenant_on_plan(slug)
    with tenant:
        for schedule in Schedule.objects.select_related("periodic_task"):
            schedule_delete(schedule=schedule)  # both rows, as the API does
        Job.objects.all().delete()
    return tenant, key


def schedule_post(key: str, **body: Any) -> Any:
    """POST /schedules of a demo.add named "s" unless told otherwise; the answer, whatever it is."""
    from tests.api_client import call

    return call(
        "POST",
        "/schedules",
        key=key,
        body={"name": "s", "type": "demo.add", "args": {"x": 1, "y": 2}, **body},
    )


def schedule_create_via_api(key: str, **body: Any) -> dict[str, Any]:
    """POST /schedules (a demo.add named "every" unless told otherwise); the created document."""
    answer = schedule_post(key, **{"name": "every", **body})
    assert answer.status == 201, answer.body
    created: dict[str, Any] = answer.body
    return created


@contextmanager
def tenant_zone(tenant: Any, name: str) -> Iterator[None]:
    """The tenant's time zone set to `name` for the block (the host cache emptied on both
    sides, so requests see the change at once)."""
    from tenants.middleware import host_cache_clear
    from tenants.models import Tenant

    before = Tenant.objects.get(pk=tenant.pk).timezone
    Tenant.objects.filter(pk=tenant.pk).update(timezone=name)
    host_cache_clear()
    try:
        yield
    finally:
        Tenant.objects.filter(pk=tenant.pk).update(timezone=before)
        host_cache_clear()
