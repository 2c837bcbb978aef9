"""POST /api/v1/workflows, GET /workflows/{id}, /cancel and /retry: validation at submission,
idempotency, state rules and tenant isolation. No worker runs here: the chains' behaviour on real
workers is tests/test_workflows_worker.py."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs.models import Job, Workflow, WorkflowStep
from jobs.services.workflows import workflows_advance_stranded
from tests.api_client import call


def _add(**args: Any) -> dict[str, Any]:
    return {"type": "demo.add", "args": args}


CHAIN = {"steps": [_add(x=1, y=2), _add(y=3), _add(y=4)]}


def _counts(tenant: Any) -> tuple[int, int, int]:
    with tenant:
        return Workflow.objects.count(), WorkflowStep.objects.count(), Job.objects.count()


def test_a_chain_is_accepted_with_its_first_step_queued_and_the_rest_pending(tenant_db):
    answer = call("POST", "/workflows", key=tenant_db.acme_key, body=CHAIN)
    assert answer.status == 202, answer.body
    body = answer.body
    assert body["status"] == "running"
    assert [step["position"] for step in body["steps"]] == [1, 2, 3]
    assert [step["status"] for step in body["steps"]] == ["queued", "pending", "pending"]
    first = body["steps"][0]["job"]
    assert first["args"] == {"x": 1, "y": 2}
    assert [step["job"] for step in body["steps"][1:]] == [None, None]
    assert body["steps"][1]["args"] == {"y": 3}
    with tenant_db.acme:
        job = Job.objects.get(id=first["id"])
        assert (str(job.workflow_id), job.position) == (body["id"], 1)
    again = call("GET", f"/workflows/{body['id']}", key=tenant_db.acme_key)
    assert again.status == 200
    assert again.body == body


@pytest.mark.parametrize(
    ("steps", "code", "step"),
    [
        # The second step's type returns nothing demo.add can take... the other way round:
        # demo.sleep takes no input at all.
        ([_add(x=1, y=2), {"type": "demo.sleep", "args": {"seconds": 1}}], "step_takes_no_input", 2),
        # http.request returns an object; demo.add takes a number.
        (
            [{"type": "http.request", "args": {"method": "GET", "url": "https://example.com/"}},
             _add(y=1)],
            "step_input_mismatch", 2,
        ),
        ([_add(x=1, y=2), _add(y=1), _add(y="three")], "invalid_args", 3),
        ([_add(x=1, y=2), _add(y=1, input=5)], "invalid_args", 2),
        ([_add(x=1), _add(y=1)], "invalid_args", 1),
        ([_add(x=1, y=2), {"type": "demo.nope", "args": {}}], "unknown_job_type", 2),
    ],
)  # fmt: skip
def test_a_chain_that_cannot_type_check_is_refused_naming_the_step(tenant_db, steps, code, step):
    before = _counts(tenant_db.acme)
    answer = call("POST", "/workflows", key=tenant_db.acme_key, body={"steps": steps})
    assert (answer.status, answer.error_code) == (422, code), answer.body
    assert answer.body["error"]["details"]["step"] == step
    assert answer.body["error"]["message"].startswith(f"Step {step}: ")
    assert _counts(tenant_db.acme) == before


def test_one_step_or_more_than_twenty_or_unknown_fields_are_refused(tenant_db):
    before = _counts(tenant_db.acme)
    for body in (
        {"steps": [_add(x=1, y=2)]},
        {"steps": [_add(x=1, y=2)] + [_add(y=1)] * 20},
        {"steps": [{**_add(x=1, y=2), "queue": "heavy"}, _add(y=1)]},
        {"steps": [_add(x=1, y=2), _add(y=1)], "priority": 9},
    ):
        assert call("POST", "/workflows", key=tenant_db.acme_key, body=body).status == 422
    assert _counts(tenant_db.acme) == before
    twenty = {"steps": [_add(x=1, y=2)] + [_add(y=1)] * 19}
    assert call("POST", "/workflows", key=tenant_db.acme_key, body=twenty).status == 202


def test_an_idempotency_key_returns_the_same_workflow_and_refuses_other_steps(tenant_db):
    key = {"Idempotency-Key": f"wf-{uuid.uuid4()}"}
    first = call("POST", "/workflows", key=tenant_db.acme_key, body=CHAIN, headers=key)
    before = _counts(tenant_db.acme)
    replay = call("POST", "/workflows", key=tenant_db.acme_key, body=CHAIN, headers=key)
    assert (first.status, replay.status) == (202, 202)
    assert replay.body["id"] == first.body["id"]
    other = {"steps": [_add(x=9, y=9), _add(y=1)]}
    conflict = call("POST", "/workflows", key=tenant_db.acme_key, body=other, headers=key)
    assert (conflict.status, conflict.error_code) == (409, "idempotency_conflict")
    assert conflict.body["error"]["details"]["workflow_id"] == first.body["id"]
    assert _counts(tenant_db.acme) == before


def test_cancel_ends_the_workflow_and_its_queued_step_then_retry_resumes_it(tenant_db):
    created = call("POST", "/workflows", key=tenant_db.acme_key, body=CHAIN).body
    cancelled = call("POST", f"/workflows/{created['id']}/cancel", key=tenant_db.acme_key)
    assert cancelled.status == 200
    assert cancelled.body["status"] == "cancelled"
    assert [s["status"] for s in cancelled.body["steps"]] == ["cancelled"] * 3
    again = call("POST", f"/workflows/{created['id']}/cancel", key=tenant_db.acme_key)
    assert (again.status, again.error_code) == (409, "not_cancellable")

    retried = call("POST", f"/workflows/{created['id']}/retry", key=tenant_db.acme_key)
    assert retried.status == 202
    assert retried.body["status"] == "running"
    assert [s["status"] for s in retried.body["steps"]] == ["queued", "pending", "pending"]
    # The same job, a new attempt: not a second job for step 1.
    assert retried.body["steps"][0]["job"]["id"] == created["steps"][0]["job"]["id"]
    running = call("POST", f"/workflows/{created['id']}/retry", key=tenant_db.acme_key)
    assert (running.status, running.error_code) == (409, "not_retryable")


def test_a_steps_job_cancelled_or_retried_through_the_jobs_api_moves_its_workflow(tenant_db):
    created = call("POST", "/workflows", key=tenant_db.acme_key, body=CHAIN).body
    job_id = created["steps"][0]["job"]["id"]
    assert call("POST", f"/jobs/{job_id}/cancel", key=tenant_db.acme_key).status == 200
    cancelled = call("GET", f"/workflows/{created['id']}", key=tenant_db.acme_key).body
    assert cancelled["status"] == "cancelled"
    assert [s["status"] for s in cancelled["steps"]] == ["cancelled"] * 3
    assert call("POST", f"/jobs/{job_id}/retry", key=tenant_db.acme_key).status == 202
    resumed = call("GET", f"/workflows/{created['id']}", key=tenant_db.acme_key).body
    assert resumed["status"] == "running"
    assert [s["status"] for s in resumed["steps"]] == ["queued", "pending", "pending"]


def test_globex_cannot_see_or_touch_acmes_workflows(tenant_db):
    created = call("POST", "/workflows", key=tenant_db.acme_key, body=CHAIN).body
    for method, path in (
        ("GET", f"/workflows/{created['id']}"),
        ("POST", f"/workflows/{created['id']}/cancel"),
        ("POST", f"/workflows/{created['id']}/retry"),
    ):
        answer = call(method, path, key=tenant_db.globex_key)
        assert (answer.status, answer.error_code) == (404, "not_found"), (method, path)
    # Untouched: still running, its first step still queued.
    mine = call("GET", f"/workflows/{created['id']}", key=tenant_db.acme_key).body
    assert mine["status"] == "running"
    assert mine["steps"][0]["status"] == "queued"
    with tenant_db.globex:
        assert not Workflow.objects.filter(id=created["id"]).exists()


def test_an_unknown_or_malformed_id_is_a_404(tenant_db):
    for workflow_id in (uuid.uuid4(), "not-a-uuid"):
        answer = call("GET", f"/workflows/{workflow_id}", key=tenant_db.acme_key)
        assert (answer.status, answer.error_code) == (404, "not_found")


def test_job_types_say_which_take_an_input_and_what_they_return(tenant_db):
    by_name = {t["name"]: t for t in call("GET", "/job-types", key=tenant_db.acme_key).body}
    assert by_name["demo.add"]["step_args_schema"]["properties"]["input"] == {"type": "number"}
    assert by_name["demo.add"]["result_schema"] == {"type": "number"}
    assert by_name["demo.sleep"]["step_args_schema"] is None


def test_the_openapi_document_lists_the_workflow_endpoints_and_their_errors(tenant_db):
    document = call("GET", "/openapi.json", key=None).body
    submit = document["paths"]["/api/v1/workflows"]["post"]
    assert {"202", "400", "401", "403", "404", "409", "413", "422", "429", "503"} <= set(
        submit["responses"]
    )
    for action in ("cancel", "retry"):
        operation = document["paths"][f"/api/v1/workflows/{{workflow_id}}/{action}"]["post"]
        assert "409" in operation["responses"]
        assert "404" in operation["responses"]
    assert "404" in document["paths"]["/api/v1/workflows/{workflow_id}"]["get"]["responses"]


def test_a_step_that_succeeded_without_its_next_step_gets_it_from_the_reconciler(tenant_db):
    """A success recorded by a worker that predates workflows (a rolling deploy) leaves the chain
    without its next step; the reconciler's full sweep makes it, with the result as input."""
    created = call("POST", "/workflows", key=tenant_db.acme_key, body=CHAIN).body
    first_id = created["steps"][0]["job"]["id"]
    with tenant_db.acme:
        Job.objects.filter(id=first_id).update(
            status="succeeded", result=3, finished_at=timezone.now() - timedelta(minutes=1)
        )
        second_steps = Job.objects.filter(workflow_id=created["id"], position=2)
        # Just ended ones are left to their own success path.
        workflows_advance_stranded(grace=timedelta(minutes=2))
        assert not second_steps.exists()
        assert workflows_advance_stranded() >= 1
        workflows_advance_stranded()
        second = second_steps.get()  # made once
    assert (second.status, second.args) == ("queued", {"y": 3, "input": 3})
