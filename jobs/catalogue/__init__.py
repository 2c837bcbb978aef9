"""The job-type catalogue: the only things a tenant can run.

One module per job type in this package, each defining `JOB_TYPE = JobType(...)`. They are found
by scanning the package, so adding a job type means adding one module (and its tests), nothing
else. A tenant names a job type; it never names a Celery task, queue, header or task id.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match


class JobArgsError(ValueError):
    """Arguments that do not fit the job type's schema. `details` says where and why."""

    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.details = details


class UnknownJobType(LookupError):
    pass


class PermanentJobError(Exception):
    """Raised by a job type when retrying cannot help (bad input from the outside world)."""


@dataclass(frozen=True)
class JobContext:
    """What a running job may know and do besides its arguments."""

    job_id: str
    attempt: int
    schema_name: str
    report_progress: Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class JobType:
    name: str
    description: str
    args_schema: Mapping[str, Any]
    run: Callable[[JobContext, dict[str, Any]], Any]
    queue: str = "default"
    time_limit_seconds: int = 300
    max_attempts: int = 3
    # Seconds before retry n (1-based) is retry_backoff_seconds * 2 ** (n - 1), capped.
    retry_backoff_seconds: float = 2.0
    retry_backoff_max_seconds: float = 300.0
    # Valid arguments, for documentation and for tests that need a real submission of each type
    # (checked against the schema when the catalogue loads).
    examples: tuple[dict[str, Any], ...] = ()
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.args_schema)
        object.__setattr__(self, "validator", Draft202012Validator(self.args_schema))
        for example in self.examples:
            self.validate_args(example)

    def validate_args(self, args: Any) -> dict[str, Any]:
        errors = sorted(self.validator.iter_errors(args), key=lambda e: list(e.path))
        if errors:
            details = [
                {"path": "/".join(str(p) for p in error.path) or "(root)", "message": error.message}
                for error in errors[:20]
            ]
            best = best_match(errors)
            where = "/".join(str(p) for p in best.path)
            raise JobArgsError(
                f"Invalid args for {self.name}: {best.message}" + (f" at {where}" if where else ""),
                details,
            )
        assert isinstance(args, dict)  # every catalogue schema has "type": "object"
        return args

    def retry_countdown(self, attempt: int) -> float:
        return float(
            min(self.retry_backoff_seconds * 2 ** (attempt - 1), self.retry_backoff_max_seconds)
        )


@cache
def catalogue() -> dict[str, JobType]:
    """Every job type, by name, from the modules of this package."""
    found: dict[str, JobType] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        job_type = getattr(module, "JOB_TYPE", None)
        if not isinstance(job_type, JobType):
            continue
        if job_type.name in found:
            raise RuntimeError(f"job type {job_type.name} is defined twice")
        found[job_type.name] = job_type
    return found


def job_type_get(name: str) -> JobType:
    try:
        return catalogue()[name]
    except KeyError:
        raise UnknownJobType(name) from None
