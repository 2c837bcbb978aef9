"""demo.add: x + y, optionally after a pause (the seed's `add` task)."""

from __future__ import annotations

import time
from typing import Any

from jobs.catalogue import JobContext, JobType


def run(context: JobContext, args: dict[str, Any]) -> float | int:
    if args.get("sleep_ms"):
        time.sleep(args["sleep_ms"] / 1000)
    result: float | int = args["x"] + args["y"]
    return result


JOB_TYPE = JobType(
    name="demo.add",
    description="Adds two numbers, after an optional pause of sleep_ms milliseconds.",
    args_schema={
        "type": "object",
        "properties": {
            "x": {"type": "number", "minimum": -1e15, "maximum": 1e15},
            "y": {"type": "number", "minimum": -1e15, "maximum": 1e15},
            "sleep_ms": {"type": "integer", "minimum": 0, "maximum": 60_000},
        },
        "required": ["x", "y"],
        "additionalProperties": False,
    },
    run=run,
    time_limit_seconds=120,
    examples=({"x": 1, "y": 2}, {"x": -1e15, "y": 1e15}, {"x": 0.5, "y": -3, "sleep_ms": 0}),
)
