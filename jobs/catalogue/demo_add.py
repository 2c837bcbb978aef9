"""demo.add: x + y, optionally after a pause (the seed's `add` task). As a later step of a
workflow x may be left out: it is then the previous step's result (`input`)."""

from __future__ import annotations

import time
from typing import Any

from jobs.catalogue import JobContext, JobType


def run(context: JobContext, args: dict[str, Any]) -> float | int:
    if args.get("sleep_ms"):
        time.sleep(args["sleep_ms"] / 1000)
    # As a later workflow step, a left-out x is the previous step's result.
    x = args["x"] if "x" in args else args["input"]
    result: float | int = x + args["y"]
    return result


_NUMBER = {"type": "number", "minimum": -1e15, "maximum": 1e15}
_SLEEP_MS = {"type": "integer", "minimum": 0, "maximum": 60_000}

JOB_TYPE = JobType(
    name="demo.add",
    description="Adds two numbers, after an optional pause of sleep_ms milliseconds.",
    args_schema={
        "type": "object",
        "properties": {
            "x": _NUMBER,
            "y": _NUMBER,
            "sleep_ms": _SLEEP_MS,
        },
        "required": ["x", "y"],
        "additionalProperties": False,
    },
    result_schema={"type": "number"},
    step_args_schema={
        "type": "object",
        "properties": {
            "x": _NUMBER,
            "y": _NUMBER,
            "sleep_ms": _SLEEP_MS,
            # Any number: a sum of two steps may exceed the bounds of x.
            "input": {"type": "number"},
        },
        "required": ["y", "input"],
        "additionalProperties": False,
    },
    run=run,
    time_limit_seconds=120,
    examples=({"x": 1, "y": 2}, {"x": -1e15, "y": 1e15}, {"x": 0.5, "y": -3, "sleep_ms": 0}),
)
