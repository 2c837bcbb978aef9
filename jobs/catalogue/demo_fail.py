"""demo.fail: always raises, to exercise retries, final failure and alerts."""

from __future__ import annotations

from typing import Any, NoReturn

from jobs.catalogue import JobContext, JobType


class DemoFailure(RuntimeError):
    pass


def run(context: JobContext, args: dict[str, Any]) -> NoReturn:
    raise DemoFailure(args["message"])


JOB_TYPE = JobType(
    name="demo.fail",
    description="Raises an error with `message`; retried, then failed for good.",
    args_schema={
        "type": "object",
        "properties": {"message": {"type": "string", "maxLength": 1000}},
        "required": ["message"],
        "additionalProperties": False,
    },
    run=run,
    # Accepts any previous result as a later workflow step (and fails all the same).
    step_args_schema={
        "type": "object",
        "properties": {"message": {"type": "string", "maxLength": 1000}, "input": {}},
        "required": ["message", "input"],
        "additionalProperties": False,
    },
    max_attempts=3,
    retry_backoff_seconds=0.5,
    examples=({"message": ""}, {"message": "boom ✓ \U0001f600"}),
)
