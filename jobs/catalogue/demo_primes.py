"""demo.primes: CPU-bound work on the `heavy` queue (the seed's default / heavy_tasks split).

Counts the primes below `below` by trial division: seconds of CPU for a few million, so that a
heavy job type can be given workers of its own (`celery -A saas_platform worker -Q heavy`) while
quick jobs keep the `default` workers to themselves.
"""

from __future__ import annotations

import math
from typing import Any

from jobs.catalogue import JobContext, JobType

_REPORT_EVERY = 200_000


def run(context: JobContext, args: dict[str, Any]) -> dict[str, int]:
    below = int(args["below"])
    count = 0
    for n in range(2, below):
        if all(n % d for d in range(2, math.isqrt(n) + 1)):
            count += 1
        if n % _REPORT_EVERY == 0:
            context.report_progress({"done": round(n / below, 3)})
    return {"below": below, "primes": count}


JOB_TYPE = JobType(
    name="demo.primes",
    description="Counts the primes below `below` (CPU-bound; runs on the heavy queue).",
    args_schema={
        "type": "object",
        "properties": {"below": {"type": "integer", "minimum": 2, "maximum": 20_000_000}},
        "required": ["below"],
        "additionalProperties": False,
    },
    run=run,
    queue="heavy",
    time_limit_seconds=1800,
    # Raised inside the job a minute before the hard limit kills its process (prefork): the
    # attempt is recorded timed_out by the runner, not by the main process after a kill.
    soft_time_limit_seconds=1740,
    result_schema={
        "type": "object",
        "properties": {"below": {"type": "integer"}, "primes": {"type": "integer"}},
    },
    examples=({"below": 2}, {"below": 1000}),
)
