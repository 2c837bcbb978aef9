"""demo.sleep: sleeps, reporting progress about once a second."""

from __future__ import annotations

import time
from typing import Any

from jobs.catalogue import JobContext, JobType

_STEP_SECONDS = 1.0


def run(context: JobContext, args: dict[str, Any]) -> dict[str, float]:
    total = float(args["seconds"])
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < total:
        context.report_progress({"done": round(elapsed / total, 3), "elapsed_seconds": elapsed})
        time.sleep(min(_STEP_SECONDS, total - elapsed))
    context.report_progress({"done": 1.0, "elapsed_seconds": total})
    return {"slept_seconds": total}


JOB_TYPE = JobType(
    name="demo.sleep",
    description="Sleeps for `seconds`, reporting progress about once a second.",
    args_schema={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 3600}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
    run=run,
    time_limit_seconds=3700,
    result_schema={"type": "object", "properties": {"slept_seconds": {"type": "number"}}},
    examples=({"seconds": 0}, {"seconds": 3600}, {"seconds": 0.25}),
)
